//! The benchmark harness of the `spliceway` command, as a library the binary calls into:
//! `spliceway bench`, `spliceway sink` and the hidden `spliceway corrupting-relay`. See
//! docs/benchmarks.md for what the bench measures and how.
//!
//! It is an application harness, not part of the embeddable engine (`spliceway`): errors are
//! `anyhow` errors, results go to stdout and progress to stderr, the bench starts relays from
//! the running executable (`spliceway relay`) and exits the process after cleaning up on
//! SIGINT/SIGTERM. The caller sets up `tracing` first; an error whose chain holds a
//! [`UsageError`] is a usage error (the binary exits 2), any other is a failure (it exits 1).
//!
//! Public: each command's clap arguments and entry point, [`UsageError`], the readings of
//! /proc that `spliceway-microbench` shares ([`cpu`], [`procfs`]) and the network namespaces
//! that `spliceway-test-kit` builds its own on ([`netns`]). Modules, in the
//! order a bench run uses them:
//!
//! - `args`: the `bench` flags and the parsers of their values.
//! - `units`: byte sizes and link rates as the flags give them.
//! - `plan`: the flags validated into one `Plan` (its errors are usage errors).
//! - `error`: `UsageError`, the mark on usage errors.
//! - `bench`: `spliceway bench` from flags to verdict: plan, payload, runs, report.
//! - `data`: the payload, generated and hashed before any timing.
//! - `cleanup`: what to undo however the bench ends; each resource registers its removal there.
//! - `interrupt`: the signal thread that runs the cleanup on Ctrl-C or SIGTERM.
//! - `netns`: network namespaces (public: the test kit's are built on them) and, in
//!   `netns/topology.rs`, the emulated topology (veth links, tbf), removed on drop.
//! - `cgroup`: `--relay-cpu`, a CFS quota per relay (cgroup v1 or v2).
//! - `paths`: path kinds and `--peer` command templates.
//! - `child`: relay processes: spawn, readiness, stop by PID.
//! - `local_sink`: the in-process sink (timing at end of stream, hash after).
//! - `protocol`: the sink's one-line answer and the hello lines that choose other workloads,
//!   shared with `spliceway sink`; the soak's requests take the same framing.
//! - `opening`: a sink reads a connection's first bytes and tells which workload it is.
//! - `echo`: the sinks' `echo` workload.
//! - `parts`: the sinks' `parts` workload (an answer per part).
//! - `client`: one upload.
//! - `round_trips`: `--workload rtt`, request/response round trips on one connection.
//! - `connections`: `--workload connect`, one small exchange per new connection.
//! - `latency`: the request workloads' latency samples and percentiles.
//! - `streams`: uploads over several connections and in parts (`--streams`, `--part-size`,
//!   `--pattern aws-cli`).
//! - `cpu`: a relay's CPU time from /proc (public: the microbenchmarks use it too).
//! - `procfs`: a process's RSS and descriptors, the machine's slab and socket memory (public:
//!   the scale benchmark's readings).
//! - `runner`: the interleaved runs.
//! - `kernel_counters`: `--kernel-counters`, the kernel's packet work behind each emulated run.
//! - `progress`: the progress bar and per-run lines on stderr.
//! - `report`: medians, the table and the JSON.
//! - `plot`: `--plot`, `--plot-from`, `--markdown`: the chart and Markdown tables of reports.
//! - `svg`: the few SVG elements `plot` writes.
//! - `compare`: `--compare`, builds side by side in interleaved rounds (connection, round-trip
//!   and upload CPU; `--release-profile`).
//! - `compare_variant`: the command that starts each kind of `--compare` variant (`relay`
//!   flags, `--config FILE`, `--compare-connect-proxy`, `--compare-peer`).
//! - `compare_interception`: `--compare --topology interception`, each variant three ways in
//!   the namespaces of `netns::interception`.
//! - `compare_observer`: `--compare-top`, `spliceway top` in a tmux pane watching a variant.
//! - `compare_idle`: `--idle-connections`, connections held open through each variant's relay.
//! - `compare_report`: `--compare`'s figures, JSON and lines.
//! - `compare_upload`: `--compare`'s upload over `--streams` connections, checked share by share.
//! - `wakeups`: a relay's wake-ups (its threads' voluntary context switches).
//! - `s3`: `--s3`, the same measurement against S3 or an S3-compatible service (its own
//!   HTTP client over rustls, requests signed by rusty-s3).
//! - `sink`: `spliceway sink`, the far end of a bench across real hosts.
//! - `corrupting_relay`: the hidden `corrupting-relay` command used by the integrity tests.
//! - `soak`: `spliceway soak`, a mixed load through one `spliceway run` for minutes, and its
//!   verdict (descriptor and memory slopes, hashes, endings, the log, health latency).

mod args;
mod bench;
mod cgroup;
mod child;
mod cleanup;
mod client;
mod compare;
mod compare_idle;
mod compare_interception;
mod compare_observer;
mod compare_report;
mod compare_upload;
mod compare_variant;
mod connections;
mod corrupting_relay;
pub mod cpu;
mod data;
mod echo;
mod error;
mod interrupt;
mod kernel_counters;
mod latency;
mod local_sink;
pub mod netns;
mod opening;
mod parts;
mod paths;
mod plan;
mod plot;
pub mod procfs;
mod progress;
mod protocol;
mod report;
mod round_trips;
mod runner;
mod s3;
mod sink;
mod soak;
mod streams;
mod svg;
mod udp;
mod units;
mod wakeups;

pub use args::BenchArgs;
pub use bench::run as run_bench;
pub use corrupting_relay::{CorruptingRelayArgs, run as run_corrupting_relay};
pub use error::UsageError;
pub use sink::{SinkArgs, run as run_sink};
pub use soak::{SoakArgs, run as run_soak};
