//! The hand-written parts of the man pages, in one place: what clap cannot say (DESCRIPTION,
//! FILES, SIGNALS, EXIT STATUS, EXAMPLES, SEE ALSO, ...). `man/mod.rs` puts them after the
//! NAME, SYNOPSIS and OPTIONS clap_mangen renders from the command line's definitions, so the
//! flags are never described twice.

use roff::{Roff, bold, roman};

/// A piece of a section.
#[derive(Debug, Clone, Copy)]
pub enum Block {
    /// A paragraph.
    Para(&'static str),
    /// A term (bold) and what it means, indented.
    Item(&'static str, &'static str),
    /// A comment, then a command line as typed.
    Example(&'static str, &'static str),
}

use Block::{Example, Item, Para};

/// One page's hand-written sections.
#[derive(Debug)]
pub struct Page {
    /// `spliceway`, a command's name (`relay`), or `spliceway.toml`.
    pub name: &'static str,
    /// DESCRIPTION.
    pub description: &'static [Block],
    /// Further sections, in order: (title, blocks).
    pub sections: &'static [(&'static str, &'static [Block])],
    /// SEE ALSO: (page, section).
    pub see_also: &'static [(&'static str, &'static str)],
}

/// Who may use the observing commands.
const OBSERVE_ACCESS: &str = "Only the user the relay runs as (or root) may ask: the relay \
     checks the peer's credentials on the socket. The relay answers between two turns of its \
     event loop; nothing on the path bytes take is locked. The protocol, for scripts: \
     docs/control-protocol.md.";

const OBSERVE_FILES: &[Block] = &[Item(
    "control_socket",
    "The unix socket named in the configuration file (e.g. /run/spliceway/control.sock), or \
     spliceway relay's --control-socket.",
)];

const EXIT_OBSERVE: &[Block] = &[
    Item("0", "The relay answered."),
    Item(
        "1",
        "The relay could not be reached, refused the peer, or answered with an error.",
    ),
    Item(
        "2",
        "Bad usage, or no control socket configured (the message says how to set one).",
    ),
    Item("78", "The configuration file given cannot be read."),
];

const OBSERVE_SEE_ALSO: &[(&str, &str)] = &[
    ("spliceway-status", "1"),
    ("spliceway-connections", "1"),
    ("spliceway-close", "1"),
    ("spliceway-top", "1"),
    ("spliceway-run", "1"),
    ("spliceway.toml", "5"),
];

const EXIT_RELAY: &[Block] = &[
    Item("0", "Stopped by a signal, after draining."),
    Item(
        "1",
        "A failure while running: the event loop failed, a worker panicked, privileges could \
         not be dropped.",
    ),
    Item(
        "2",
        "Bad usage: a bad flag or argument, an address that does not parse, a port in use or \
         that needs privileges (the message names CAP_NET_BIND_SERVICE), an upstream that does \
         not resolve at start-up, a --user that does not exist.",
    ),
];

const SIGNALS_RELAY: &[Block] = &[
    Item(
        "SIGTERM, SIGINT",
        "Drain: /readyz answers 503 at once; after --drain-delay the listeners close and open \
         connections get up to --drain-timeout to finish; then the rest are reset. A second \
         signal resets them at once.",
    ),
    Item(
        "SIGUSR1, SIGUSR2",
        "One step more, or less, log detail (notice, info, debug, trace), while running.",
    ),
    Item(
        "SIGHUP",
        "Ignored, with a log line: relay has no file to reload (spliceway run does).",
    ),
];

const METRICS: &[Block] = &[
    Para(
        "With a metrics address (--metrics for relay, metrics in the file for run) the relay \
         serves plain HTTP, without authentication: keep it on loopback or a management \
         network.",
    ),
    Item(
        "/metrics",
        "Prometheus text format: connections accepted, open, completed, refused and reset per \
         route and reason, bytes each way, connect latency, pipe pool use, PROXY header \
         errors, draining.",
    ),
    Item(
        "/healthz",
        "200 while the workers run, 503 otherwise (a liveness probe).",
    ),
    Item(
        "/readyz",
        "200 while accepting; 503 from the first SIGTERM on, for a load balancer's health \
         check.",
    ),
];

const LOGGING: &[Block] = &[
    Para(
        "Logs go to stderr, as text lines or with --log-format json one JSON object per line \
         (timestamp, level, fields, target), numbers as JSON numbers. Only spliceway's own \
         lines are shown; RUST_LOG, when set, chooses instead (tracing's filter syntax, e.g. \
         RUST_LOG=spliceway=debug).",
    ),
    Para(
        "A closed connection's line (-v, or log_level = \"info\") names its route, client \
         (with via= the load balancer behind PROXY protocol), upstream, bytes_up, bytes_down, \
         connect_ms, duration_ms and end (how it ended). -vv adds a line as each connection is \
         accepted and connected. Refused clients are summarised, at most one line per 10 \
         seconds per worker.",
    ),
];

/// Every page, the main one first.
pub const PAGES: &[Page] = &[
    Page {
        name: "spliceway",
        description: &[
            Para(
                "spliceway accepts TCP connections and relays each to an upstream, moving the \
                 bytes kernel to kernel with splice(2) through a pipe per direction, on an \
                 epoll event loop per worker thread. The payload never enters user space, so \
                 the relay is not the bottleneck even on the smallest instance.",
            ),
            Para(
                "spliceway relay LISTEN UPSTREAM relays one address from the command line. \
                 spliceway run --config FILE runs the routes of a configuration file \
                 (spliceway.toml(5)): several listeners, routing by TLS server name (SNI) \
                 without decrypting, access lists, PROXY protocol, Prometheus metrics, reload \
                 on SIGHUP, drain on SIGTERM; spliceway check validates such a file as run \
                 would, and spliceway upgrade replaces a running relay by the binary now \
                 installed without refusing a connection. spliceway status, connections, \
                 close and top show and act on what a running relay is doing, over its \
                 control socket.",
            ),
            Para(
                "The package installs spliceway.service enabled but not started: edit \
                 /etc/spliceway/spliceway.toml, check it, then systemctl start spliceway.",
            ),
        ],
        sections: &[
            (
                "FILES",
                &[
                    Item(
                        "/etc/spliceway/spliceway.toml",
                        "The configuration of spliceway run (spliceway.toml(5)).",
                    ),
                    Item(
                        "spliceway.service, spliceway.socket",
                        "The systemd units (in /lib/systemd/system or /usr/lib/systemd/system): \
                         the service runs the relay unprivileged with CAP_NET_BIND_SERVICE, \
                         reloads with SIGHUP and drains on stop; the socket unit (not enabled by \
                         the package) holds the ports while the service restarts.",
                    ),
                    Item(
                        "/usr/share/doc/spliceway/",
                        "README.md and the documents it links to (docs/operations.md: \
                         operations, reload, drain, metrics, load balancers, privileges).",
                    ),
                ],
            ),
            (
                "ENVIRONMENT",
                &[
                    Item(
                        "RUST_LOG",
                        "Chooses the log filter instead of -v, -q and log_level (tracing's \
                         syntax, e.g. RUST_LOG=spliceway=debug,spliceway::conn=info).",
                    ),
                    Item(
                        "NOTIFY_SOCKET, LISTEN_FDS, LISTEN_FDNAMES",
                        "Set by systemd: run reports READY=1, RELOADING=1 and STOPPING=1, and \
                         serves the listening sockets a socket unit passes.",
                    ),
                ],
            ),
            (
                "EXIT STATUS",
                &[
                    Item("0", "Success."),
                    Item(
                        "1",
                        "A failure while running (the event loop failed, a benchmark's \
                         integrity check failed, an upgrade did not complete).",
                    ),
                    Item(
                        "2",
                        "Bad usage: a bad flag or argument, a bad address, a port in use or \
                         that needs privileges, an upstream that does not resolve at start-up.",
                    ),
                    Item(
                        "78",
                        "A configuration file error (EX_CONFIG), located at file:line:column; \
                         the packaged unit stops restarting on it (RestartPreventExitStatus=78).",
                    ),
                ],
            ),
            (
                "EXAMPLES",
                &[
                    Example(
                        "Relay port 443 to S3 for two private networks, dropping root once \
                         bound, logging each connection:",
                        "sudo spliceway relay 0.0.0.0:443 s3-ap-northeast-1.amazonaws.com:443 \\\n    \
                         --allow 10.0.0.0/8,192.168.0.0/16 --user nobody -vv",
                    ),
                    Example(
                        "Check the configuration, then apply it to the running service:",
                        "spliceway check && sudo systemctl reload spliceway",
                    ),
                    Example(
                        "Read about every key of the configuration file:",
                        "man 5 spliceway.toml",
                    ),
                ],
            ),
        ],
        see_also: &[
            ("spliceway-relay", "1"),
            ("spliceway-run", "1"),
            ("spliceway-check", "1"),
            ("spliceway-upgrade", "1"),
            ("spliceway-status", "1"),
            ("spliceway-connections", "1"),
            ("spliceway-close", "1"),
            ("spliceway-top", "1"),
            ("spliceway-bench", "1"),
            ("spliceway-sink", "1"),
            ("spliceway-completions", "1"),
            ("spliceway.toml", "5"),
            ("systemd.service", "5"),
            ("splice", "2"),
        ],
    },
    Page {
        name: "relay",
        description: &[
            Para(
                "Relays every connection to LISTEN (an IP literal and a port) to UPSTREAM \
                 (host:port or ip:port; a name is resolved per connection, so an upstream whose \
                 addresses change is followed). One route, no file: for a configuration with \
                 several routes, SNI, reloads and a service, see spliceway-run(1).",
            ),
            Para(
                "Without --allow every client that reaches LISTEN is relayed: on an address \
                 other than loopback that is an open relay to UPSTREAM, and the relay warns \
                 about it. --allow and --deny take networks as allow and deny do in the \
                 configuration file (deny first; bare addresses mean /32 or /128).",
            ),
            Para(
                "Ports below 1024 need root or CAP_NET_BIND_SERVICE. Started as root, --user \
                 NAME drops to that user as soon as LISTEN is bound (keeping only \
                 CAP_NET_BIND_SERVICE); without it the relay warns that it runs as root.",
            ),
            Para(
                "UPSTREAM may also be original-destination: each connection goes to the \
                 address its client dialled before an nftables REDIRECT or DNAT rule (read with \
                 SO_ORIGINAL_DST), or a TPROXY rule with --transparent, sent it to LISTEN; or \
                 http-connect: each client asks with HTTP CONNECT host:port (HTTPS_PROXY), \
                 answered 200, 400, 403, 502 or 504. Both need --upstream-allow, the only ranges \
                 the relay may reach (loopback, link-local and the relay itself stay refused), \
                 and http-connect needs --connect-allow. --transparent and --source client \
                 need CAP_NET_ADMIN: without it the relay exits 2 at start.",
            ),
        ],
        sections: &[
            ("SIGNALS", SIGNALS_RELAY),
            ("LOGGING", LOGGING),
            ("METRICS", METRICS),
            ("EXIT STATUS", EXIT_RELAY),
            (
                "EXAMPLES",
                &[
                    Example(
                        "The S3 stand-in for an office's networks, as root dropping to nobody:",
                        "sudo spliceway relay 0.0.0.0:443 s3-ap-northeast-1.amazonaws.com:443 \\\n    \
                         --allow 10.0.0.0/8,172.16.0.0/12 --user nobody",
                    ),
                    Example(
                        "A high port needs no privileges; log each connection as JSON:",
                        "spliceway relay [::]:8443 backend.internal:443 --allow fd00::/8 \\\n    \
                         -v --log-format json",
                    ),
                    Example(
                        "Behind a load balancer sending PROXY protocol v2, with metrics and a \
                         drain delay:",
                        "spliceway relay 0.0.0.0:8443 s3.ap-northeast-1.amazonaws.com:443 \\\n    \
                         --accept-proxy v2 --accept-proxy-from 10.0.0.0/16 \\\n    \
                         --metrics 0.0.0.0:9898 --drain-delay 30s",
                    ),
                    Example(
                        "An HTTPS_PROXY for the AWS CLI, to S3 only:",
                        "spliceway relay 0.0.0.0:3128 http-connect \\\n    \
                         --connect-allow '*.amazonaws.com:443' \\\n    \
                         --upstream-allow 52.216.0.0/15,3.5.0.0/19 --allow 10.0.0.0/8",
                    ),
                    Example(
                        "Connections an nftables REDIRECT rule sends to port 15001 (iifname \
                         \"ens5\" tcp dport 443 redirect to :15001), to where they were going:",
                        "spliceway relay 0.0.0.0:15001 original-destination \\\n    \
                         --upstream-allow 52.216.0.0/15,3.5.0.0/19",
                    ),
                ],
            ),
        ],
        see_also: &[
            ("spliceway", "1"),
            ("spliceway-run", "1"),
            ("spliceway-upgrade", "1"),
            ("spliceway.toml", "5"),
        ],
    },
    Page {
        name: "run",
        description: &[
            Para(
                "Runs the relay described by a configuration file (spliceway.toml(5)), as the \
                 packaged spliceway.service does. Start-up: read and check the file (exit 78 on \
                 an error, located at file:line:column), set up logging, raise the open-file \
                 limit, bind every listener (or take those systemd or an upgrading process \
                 passes; exit 2 if a port is taken or needs privileges), drop privileges to \
                 user and group if started as root, serve metrics, handle signals, tell \
                 systemd READY=1, relay.",
            ),
            Para(
                "The flags -v and -q shift the file's log_level rather than set it; \
                 --log-format json, or log_format = \"json\" in the file, writes JSON lines.",
            ),
        ],
        sections: &[
            (
                "FILES",
                &[
                    Item(
                        "/etc/spliceway/spliceway.toml",
                        "The configuration read unless --config names another \
                         (spliceway.toml(5)); reread on SIGHUP. After a privilege drop it must \
                         stay readable by that user for reloads to work.",
                    ),
                    Item(
                        "control_socket",
                        "When the file sets one: the unix socket (mode 0600) that \
                         spliceway-upgrade(1) talks to.",
                    ),
                ],
            ),
            (
                "SIGNALS",
                &[
                    Item(
                        "SIGHUP",
                        "Reload: read the file again and apply it without dropping a \
                         connection (routes matched by name; new listeners bound, removed ones \
                         drained). An invalid file is logged and the running configuration \
                         stays. threads, user, group, metrics, log_format, control_socket, \
                         pool_idle_pipes and pipe_budget change only on a restart (a reload \
                         warns). systemctl reload spliceway sends it.",
                    ),
                    Item(
                        "SIGTERM, SIGINT",
                        "Drain: /readyz answers 503 at once; after drain_delay the listeners \
                         close and open connections get up to drain_timeout; then the rest are \
                         reset. A second signal resets them at once.",
                    ),
                    Item(
                        "SIGUSR1, SIGUSR2",
                        "One step more, or less, log detail, while running.",
                    ),
                ],
            ),
            ("LOGGING", LOGGING),
            ("METRICS", METRICS),
            (
                "EXIT STATUS",
                &[
                    Item("0", "Stopped by a signal, after draining."),
                    Item(
                        "1",
                        "A failure while running: the event loop failed, a worker panicked, \
                         privileges could not be dropped. systemd restarts it \
                         (Restart=on-failure).",
                    ),
                    Item(
                        "2",
                        "A port in use or that needs privileges (the message names \
                         CAP_NET_BIND_SERVICE, user = and the unit), the metrics or control \
                         socket address taken.",
                    ),
                    Item(
                        "78",
                        "The configuration file is invalid or unreadable; the message names \
                         the file, line, column and key. The packaged unit does not restart \
                         on it.",
                    ),
                ],
            ),
            (
                "EXAMPLES",
                &[
                    Example(
                        "Check an edited file, then apply it to the running service:",
                        "spliceway check && sudo systemctl reload spliceway",
                    ),
                    Example(
                        "Run in the foreground with one more step of detail than log_level:",
                        "sudo spliceway run --config /etc/spliceway/spliceway.toml -v",
                    ),
                    Example("Follow the service's log:", "journalctl -u spliceway -f"),
                ],
            ),
        ],
        see_also: &[
            ("spliceway.toml", "5"),
            ("spliceway-check", "1"),
            ("spliceway-upgrade", "1"),
            ("spliceway", "1"),
            ("systemctl", "1"),
        ],
    },
    Page {
        name: "check",
        description: &[
            Para(
                "Reads a configuration file and refuses what spliceway run would refuse at \
                 start-up: a syntax error, an unknown key (with the key most likely meant), a \
                 value that does not parse, a time past 7 days, a size with an ambiguous unit, \
                 listeners the kernel cannot bind together, routes that relay back into the \
                 relay, a user or group that does not exist, a DNS resolver without a server. \
                 Each error names the file, line, column and key. Binds and resolves nothing.",
            ),
            Para(
                "A valid file's summary goes to stdout: every route with its listeners, \
                 upstream or server names, access lists, timeouts, engine and limits. Warnings \
                 (valid settings most likely not meant, such as PROXY headers believed from \
                 everyone) go to stderr.",
            ),
        ],
        sections: &[
            (
                "FILES",
                &[Item(
                    "/etc/spliceway/spliceway.toml",
                    "The file checked unless --config names another (spliceway.toml(5)).",
                )],
            ),
            (
                "EXIT STATUS",
                &[
                    Item("0", "The file is valid."),
                    Item("2", "Bad usage (a bad flag)."),
                    Item("78", "The file is invalid or unreadable."),
                ],
            ),
            (
                "EXAMPLES",
                &[
                    Example(
                        "Apply an edited file only if it is valid:",
                        "spliceway check -q && sudo systemctl reload spliceway",
                    ),
                    Example(
                        "Check a file before installing it:",
                        "spliceway check --config ./spliceway.toml",
                    ),
                ],
            ),
        ],
        see_also: &[
            ("spliceway.toml", "5"),
            ("spliceway-run", "1"),
            ("spliceway", "1"),
        ],
    },
    Page {
        name: "upgrade",
        description: &[
            Para(
                "Asks the running relay, through its control socket (control_socket in the \
                 file, or --control-socket of spliceway relay), to start the spliceway binary \
                 now installed and hand it the listening sockets: no connection is refused or \
                 dropped; the old process stops accepting and drains its connections. Prints \
                 pid N of the new process. If the new process fails to start (an invalid \
                 file, say), the old relay carries on serving and this command exits 1 with \
                 the reason.",
            ),
            Para(
                "Only the user the relay runs as (or root) may ask: the relay checks the \
                 peer's credentials on the socket.",
            ),
        ],
        sections: &[
            (
                "FILES",
                &[Item(
                    "control_socket",
                    "The unix socket named in the configuration file (e.g. \
                     /run/spliceway/control.sock).",
                )],
            ),
            (
                "EXIT STATUS",
                &[
                    Item("0", "The new process serves; its pid was printed."),
                    Item(
                        "1",
                        "The relay could not be reached, or the upgrade failed; the old relay \
                         still serves.",
                    ),
                    Item("2", "Bad usage."),
                    Item(
                        "78",
                        "The configuration file given with --config names no control_socket \
                         or cannot be read.",
                    ),
                ],
            ),
            (
                "EXAMPLES",
                &[Example(
                    "After installing a new package, without a restart:",
                    "sudo spliceway upgrade --config /etc/spliceway/spliceway.toml",
                )],
            ),
        ],
        see_also: &[
            ("spliceway-run", "1"),
            ("spliceway-relay", "1"),
            ("spliceway.toml", "5"),
        ],
    },
    Page {
        name: "status",
        description: &[
            Para(
                "Asks the running relay, over its control socket (found as spliceway upgrade \
                 finds it: --control-socket, or control_socket in --config, by default \
                 /etc/spliceway/spliceway.toml), what it is doing: version, pid, uptime, \
                 serving or draining, connections open, accepted and refused totals, bytes \
                 each way, the current rate each way, every route with its listeners and \
                 upstream(s), and when the last reload (SIGHUP) happened and how it went.",
            ),
            Para(OBSERVE_ACCESS),
        ],
        sections: &[
            ("FILES", OBSERVE_FILES),
            ("EXIT STATUS", EXIT_OBSERVE),
            (
                "EXAMPLES",
                &[
                    Example(
                        "Is it up, and how busy:",
                        "sudo spliceway status --config /etc/spliceway/spliceway.toml",
                    ),
                    Example(
                        "The same for a script (one JSON object):",
                        "spliceway status --control-socket /run/spliceway/control.sock --json",
                    ),
                ],
            ),
        ],
        see_also: OBSERVE_SEE_ALSO,
    },
    Page {
        name: "connections",
        description: &[
            Para(
                "Lists the running relay's live connections, one a line: id (the id of the \
                 connection's log lines), route, client (the address a PROXY header gave, \
                 followed by via and the load balancer's address), upstream address, phase \
                 (awaiting-header, awaiting-hello, awaiting-request, resolving, connecting, relaying, \
                 half-closed), age, bytes up (client to upstream) and down, the rate each way \
                 over the last second or more, and the mode (splice, or copy).",
            ),
            Para(
                "--route and --client select; --sort orders (age: oldest first; bytes, rate: \
                 largest first); --limit keeps the first N. The relay's workers apply them, \
                 so a listing of a busy relay costs in proportion to what is asked. With \
                 --json: an array of objects with id, route, client, via, upstream, phase, \
                 age_seconds, bytes_up, bytes_down, rate_up, rate_down, mode.",
            ),
            Para(
                "--udp lists the UDP routes' sessions instead, one a line: route, client, \
                 upstream, age, idle time (a session ends after udp_idle_timeout without a \
                 datagram), datagrams and bytes each way. --route and --client select them \
                 too; --sort bytes and rate both order by bytes (sessions have no rates). With \
                 --json: an array of objects with route, client, upstream, age_seconds, \
                 idle_seconds, datagrams_up, bytes_up, datagrams_down, bytes_down. Without \
                 --udp, the table ends with how many UDP sessions there are.",
            ),
            Para(OBSERVE_ACCESS),
        ],
        sections: &[
            ("FILES", OBSERVE_FILES),
            ("EXIT STATUS", EXIT_OBSERVE),
            (
                "EXAMPLES",
                &[
                    Example(
                        "The ten fastest connections now:",
                        "sudo spliceway connections --sort rate --limit 10",
                    ),
                    Example(
                        "One client's connections, for a script:",
                        "sudo spliceway connections --client 10.1.2.3 --json",
                    ),
                ],
            ),
        ],
        see_also: OBSERVE_SEE_ALSO,
    },
    Page {
        name: "close",
        description: &[
            Para(
                "Resets live connections of the running relay: those whose ids are given (as \
                 spliceway connections shows them), or with --client every connection from \
                 that network, with --route every connection of that route (both: of both). \
                 Both peers see a reset (RST), never a clean end; the relay logs each as \
                 closed by the operator with the uid and pid that asked. Prints the ids \
                 closed.",
            ),
            Para(
                "With --udp it ends the UDP sessions --client and --route select (one of them \
                 is needed) and prints their route and client. A session's end sends nothing \
                 to anyone; the client's next datagram opens a new session, to the route's \
                 upstreams as they are now: after a reload that changed a UDP route's \
                 upstream, this moves the open sessions instead of waiting for them to idle \
                 out. The relay logs the request with the uid and pid that asked, and counts \
                 the sessions in spliceway_udp_sessions_ended_total{reason=\"operator\"}.",
            ),
            Para(OBSERVE_ACCESS),
        ],
        sections: &[
            ("FILES", OBSERVE_FILES),
            (
                "EXIT STATUS",
                &[
                    Item(
                        "0",
                        "At least one connection was reset (with --udp: one session ended).",
                    ),
                    Item(
                        "1",
                        "None was (no such connection), or the relay could not be reached or \
                         refused the request.",
                    ),
                    Item(
                        "2",
                        "Bad usage, a --client that is not an address or a network, or no \
                         control socket configured (the message says how to set one).",
                    ),
                    Item("78", "The configuration file given cannot be read."),
                ],
            ),
            (
                "EXAMPLES",
                &[
                    Example("Two connections:", "sudo spliceway close 1207 1212"),
                    Example(
                        "Everything from one client:",
                        "sudo spliceway close --client 10.1.2.3",
                    ),
                ],
            ),
        ],
        see_also: OBSERVE_SEE_ALSO,
    },
    Page {
        name: "top",
        description: &[
            Para(
                "A live view of the running relay, redrawn every --interval (one second by \
                 default) with plain terminal sequences: the relay's totals and rates, each \
                 route's open connections and rates, and the busiest connections by rate, as \
                 many as the terminal has rows for (80x24 and up; over ssh, nothing but the \
                 terminal is needed); when UDP routes have sessions, the busiest of those by \
                 bytes share the rows. q quits.",
            ),
            Para(OBSERVE_ACCESS),
        ],
        sections: &[
            ("FILES", OBSERVE_FILES),
            ("EXIT STATUS", EXIT_OBSERVE),
            (
                "EXAMPLES",
                &[Example(
                    "Watch the relay:",
                    "sudo spliceway top --config /etc/spliceway/spliceway.toml",
                )],
            ),
        ],
        see_also: OBSERVE_SEE_ALSO,
    },
    Page {
        name: "bench",
        description: &[
            Para(
                "Measures an upload (512 MiB by default) direct, through spliceway in splice \
                 and in copy mode, and through other relays given with --peer, each as many \
                 times as --runs, interleaved; prints medians of time and of the relay's CPU \
                 per GiB. Every run's bytes are checked by SHA-256 at the far end. On loopback \
                 by default; --topology emulated shapes links in network namespaces (root), \
                 --target uploads to a spliceway sink on another host.",
            ),
            Para(
                "--s3 s3://BUCKET[/PREFIX] uploads to S3 or an S3-compatible service instead \
                 (--endpoint-url), the way the AWS CLI does: multipart with 10 connections and \
                 8 MiB parts above 8 MiB, each part checksummed, the object's checksum compared. \
                 Paths: direct (the endpoint as its name resolves here) and each --via \
                 [NAME=]HOST:PORT, a relay that must pass TLS through untouched. --direction \
                 up|down|both; objects are deleted and failed uploads aborted unless --keep. \
                 Credentials as for the AWS CLI: the environment, --profile or the shared files, \
                 an EC2 instance role; AWS_CA_BUNDLE for a private CA. It reports its own CPU \
                 per GiB and warns above half a core. See docs/s3-benchmark.md.",
            ),
            Para(
                "It runs only on the machine you start it on and sends traffic only to \
                 loopback, to the namespaces it makes, or to the --target, S3 endpoint or \
                 --via relays you name.",
            ),
        ],
        sections: &[
            (
                "EXIT STATUS",
                &[
                    Item("0", "Every run completed and its bytes arrived intact."),
                    Item(
                        "1",
                        "A run failed, or its bytes did not arrive intact (with --s3 \
                         also: S3 refused the keys or a permission, the endpoint or a relay \
                         is unreachable, a --via relay does not pass TLS through).",
                    ),
                    Item(
                        "2",
                        "Bad usage (with --s3 also: no credentials, no such bucket, \
                         the bucket in another region).",
                    ),
                ],
            ),
            (
                "EXAMPLES",
                &[
                    Example("The loopback benchmark:", "spliceway bench"),
                    Example(
                        "As the AWS CLI uploads (10 connections, 8 MiB parts), as JSON:",
                        "spliceway bench --pattern aws-cli --runs 5 --json",
                    ),
                    Example(
                        "To S3, direct and through a relay that passes TLS through:",
                        "spliceway bench --s3 s3://my-bucket/bench --region ap-northeast-1 \
                         --via relay=relay.example:443",
                    ),
                ],
            ),
        ],
        see_also: &[("spliceway-sink", "1"), ("spliceway", "1")],
    },
    Page {
        name: "sink",
        description: &[Para(
            "The far end of spliceway bench --target: reads each connection to its end (or each \
             part, for multipart uploads) and answers its size and SHA-256, so the benchmark \
             can check every byte arrived.",
        )],
        sections: &[
            (
                "EXIT STATUS",
                &[
                    Item(
                        "1",
                        "A failure while serving (it otherwise runs until killed).",
                    ),
                    Item("2", "Bad usage: a bad or unusable listen address."),
                ],
            ),
            (
                "EXAMPLES",
                &[Example(
                    "On the receiving host:",
                    "spliceway sink --listen 0.0.0.0:9000",
                )],
            ),
        ],
        see_also: &[("spliceway-bench", "1"), ("spliceway", "1")],
    },
    Page {
        name: "completions",
        description: &[Para(
            "Prints the completion script of spliceway for a shell, generated from the same \
             definitions as the command line itself. The packages install them.",
        )],
        sections: &[(
            "EXAMPLES",
            &[
                Example(
                    "bash:",
                    "spliceway completions bash \\\n    \
                     > /usr/share/bash-completion/completions/spliceway",
                ),
                Example(
                    "zsh:",
                    "spliceway completions zsh \\\n    \
                     > /usr/share/zsh/vendor-completions/_spliceway",
                ),
                Example(
                    "fish:",
                    "spliceway completions fish \\\n    \
                     > ~/.config/fish/completions/spliceway.fish",
                ),
            ],
        )],
        see_also: &[("spliceway", "1")],
    },
];

/// A section of blocks.
pub fn section(roff: &mut Roff, title: &str, blocks: &[Block]) {
    roff.control("SH", [title]);
    for (i, block) in blocks.iter().enumerate() {
        match *block {
            Block::Para(text) => {
                if i > 0 {
                    roff.control("PP", []);
                }
                roff.text([roman(text)]);
            }
            Block::Item(term, text) => {
                roff.control("TP", []);
                roff.text([bold(term)]);
                roff.text([roman(text)]);
            }
            Block::Example(comment, command) => {
                if i > 0 {
                    roff.control("PP", []);
                }
                roff.text([roman(comment)]);
                roff.control("RS", ["4"]);
                roff.control("nf", []);
                roff.text([bold(command)]);
                roff.control("fi", []);
                roff.control("RE", []);
            }
        }
    }
}

/// The hand-written parts of `name`'s page.
pub fn page(name: &str) -> Option<&'static Page> {
    PAGES.iter().find(|p| p.name == name)
}
