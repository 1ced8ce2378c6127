//! Starts the relays of every path, runs the uploads interleaved across paths, and collects
//! per-run figures.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::Context as _;

use crate::cgroup::{CgroupRoot, CpuCgroup};
use crate::child::RelayProcess;
use crate::cleanup::Cleanup;
use crate::client;
use crate::connections;
use crate::cpu;
use crate::data::Payload;
use crate::kernel_counters::Reading;
use crate::local_sink::LocalSink;
use crate::netns::topology::{self, Emulated};
use crate::netns::{self, Netns};
use crate::paths::{PathKind, PathSpec, RelayAddrs};
use crate::plan::{Plan, Setting, Workload};
use crate::progress::Progress;
use crate::report::{PathResult, RunResult, mb_per_s};
use crate::round_trips::{self, Exchanges};
use crate::streams::Job;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Where the client, the relays and the sink are, as seen from each other.
#[derive(Debug)]
struct Places {
    /// Namespace of the uploading client (None: this one).
    client_ns: Option<Netns>,
    /// Namespace of the relay host: relays run there, and the `vpc` path's client.
    relay_ns: Option<Netns>,
    /// Address relays listen on.
    relay_listen_ip: IpAddr,
    /// The sink, as the client reaches it.
    sink_from_client: SocketAddr,
    /// The sink, as the relay host reaches it.
    sink_from_relay: SocketAddr,
}

/// A path ready to be measured.
#[derive(Debug)]
struct Route {
    name: String,
    connect: SocketAddr,
    client_ns: Option<Netns>,
    command: Option<String>,
    // Field order: the relay stops before its cgroup is removed.
    relay: Option<RelayProcess>,
    _cgroup: Option<CpuCgroup>,
}

/// What the bench measured, before it is turned into a report.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) results: Vec<PathResult>,
    pub(crate) timing: &'static str,
}

/// Runs every path `plan.runs` times, interleaved.
pub(crate) fn measure(
    plan: &Plan,
    payload: &Payload,
    cleanup: &Arc<Cleanup>,
) -> anyhow::Result<Measured> {
    // Drop order matters: routes (relays, cgroups), then the sink, then the namespaces.
    let topology = match &plan.setting {
        Setting::Emulated {
            internet,
            vpc,
            nic,
            burst,
        } => Some(Emulated::build(*internet, *vpc, *nic, *burst, cleanup)?),
        _ => None,
    };
    let (sink_buffer, sink_buffers) = plan.shape.sink_buffers(payload.bytes.len());
    let sink = match (&plan.setting, &topology) {
        (Setting::Remote { .. }, _) => None,
        (_, Some(t)) => Some(LocalSink::start(
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
            Some(&t.s3),
            sink_buffer,
            sink_buffers,
        )?),
        (_, None) => Some(LocalSink::start(
            SocketAddr::new(LOCALHOST, 0),
            None,
            sink_buffer,
            sink_buffers,
        )?),
    };
    let places = match (&plan.setting, &topology, &sink) {
        (Setting::Remote { target, .. }, _, _) => Places {
            client_ns: None,
            relay_ns: None,
            relay_listen_ip: LOCALHOST,
            sink_from_client: target.addr,
            sink_from_relay: target.addr,
        },
        (_, Some(t), Some(sink)) => Places {
            client_ns: Some(t.client.try_clone()?),
            relay_ns: Some(t.relay.try_clone()?),
            relay_listen_ip: topology::RELAY_FROM_CLIENT_IP.into(),
            sink_from_client: SocketAddr::new(topology::S3_FROM_CLIENT_IP.into(), sink.port()),
            sink_from_relay: SocketAddr::new(topology::S3_FROM_RELAY_IP.into(), sink.port()),
        },
        (_, _, sink) => {
            let port = sink.as_ref().map_or(0, |s| s.port());
            Places {
                client_ns: None,
                relay_ns: None,
                relay_listen_ip: LOCALHOST,
                sink_from_client: SocketAddr::new(LOCALHOST, port),
                sink_from_relay: SocketAddr::new(LOCALHOST, port),
            }
        }
    };
    let cgroups = match plan.relay_cpu {
        Some(_) => {
            let root = CgroupRoot::detect()?;
            root.remove_leftovers();
            Some(root)
        }
        None => None,
    };

    let mut routes = Vec::new();
    for spec in path_specs(plan) {
        routes.push(prepare(&spec, &places, plan, cgroups.as_ref(), cleanup)?);
    }

    // Parts and shares are hashed here, before any timing.
    let job = Job::new(plan.shape, payload);
    let rounds = u64::from(plan.runs) * routes.len() as u64;
    let progress = match plan.workload.requests() {
        None => Progress::new(plan.size as u64 * rounds, plan.quiet),
        Some(requests) => Progress::requests(requests * rounds, plan.quiet),
    };
    let mut runs: Vec<Vec<RunResult>> = routes.iter().map(|_| Vec::new()).collect();
    for run in 1..=plan.runs {
        for (route, results) in routes.iter().zip(&mut runs) {
            progress.set_stage(format!("run {run}/{} {}", plan.runs, route.name));
            let counted = topology.as_ref().filter(|_| plan.kernel_counters);
            let before = counted.map(Reading::take);
            let result = match plan.workload {
                Workload::Upload => {
                    measure_once(run, route, payload, &job, sink.as_ref(), &progress)
                }
                workload => measure_requests_once(run, route, workload, &progress),
            };
            progress.line(&describe(plan.runs, &route.name, &result));
            if let (Some(topology), Some(before)) = (counted, before) {
                progress.line(&before.delta(&Reading::take(topology)).describe());
            }
            results.push(result);
        }
    }
    progress.finish();

    let results = routes
        .iter()
        .zip(runs)
        .map(|(route, runs)| {
            let mut result = match plan.workload {
                Workload::Upload => PathResult::from_runs(&route.name, plan.size as u64, runs),
                _ => PathResult::from_request_runs(&route.name, runs),
            };
            result.command = route.command.clone();
            result
        })
        .collect();
    drop(routes);
    drop(sink);
    drop(topology);
    let remote = matches!(plan.setting, Setting::Remote { .. });
    Ok(Measured {
        results,
        timing: match (plan.workload, &plan.setting) {
            (Workload::RoundTrips { .. }, _) => {
                "per round trip, from the request's write to the whole answer read, at the client"
            }
            (Workload::Connections { .. }, _) => {
                "per connection, from connect to the whole answer read, at the client"
            }
            (Workload::Upload, setting) => plan.shape.timing(remote).unwrap_or(match setting {
                Setting::Remote { .. } => "from connect to the sink's answer, at the client",
                _ => "from connect at the client to end of stream at the sink",
            }),
        },
    })
}

/// The paths of a plan, in table order.
fn path_specs(plan: &Plan) -> Vec<PathSpec> {
    let mut specs = vec![PathSpec::new("direct", PathKind::Direct)];
    match &plan.setting {
        Setting::Remote { via, .. } => {
            if let Some(via) = via {
                specs.push(PathSpec::new("via", PathKind::Via(via.addr)));
            }
        }
        setting => {
            if matches!(setting, Setting::Emulated { .. }) {
                specs.push(PathSpec::new("vpc", PathKind::Vpc));
            }
            specs.push(PathSpec::new(
                "relay-splice",
                PathKind::Spliceway(spliceway::Mode::Splice),
            ));
            specs.push(PathSpec::new(
                "relay-copy",
                PathKind::Spliceway(spliceway::Mode::Copy),
            ));
        }
    }
    for peer in &plan.peers {
        specs.push(PathSpec::new(
            &peer.name,
            PathKind::Peer(peer.template.clone()),
        ));
    }
    specs
}

/// Starts a path's relay (if it has one) and waits until it listens.
fn prepare(
    spec: &PathSpec,
    places: &Places,
    plan: &Plan,
    cgroups: Option<&CgroupRoot>,
    cleanup: &Arc<Cleanup>,
) -> anyhow::Result<Route> {
    let relay_argv: Box<dyn Fn(RelayAddrs) -> anyhow::Result<Vec<String>>> = match &spec.kind {
        PathKind::Direct => return without_relay(spec, places.sink_from_client, &places.client_ns),
        PathKind::Vpc => return without_relay(spec, places.sink_from_relay, &places.relay_ns),
        PathKind::Via(addr) => return without_relay(spec, *addr, &None),
        PathKind::Spliceway(mode) => {
            let mode = *mode;
            Box::new(move |addrs| spliceway_relay_argv(mode, addrs))
        }
        PathKind::Peer(template) => Box::new(|addrs| Ok(template.expand(addrs))),
    };
    let port = free_port(places.relay_ns.as_ref(), places.relay_listen_ip)?;
    let addrs = RelayAddrs {
        listen: SocketAddr::new(places.relay_listen_ip, port),
        upstream: places.sink_from_relay,
    };
    let argv = relay_argv(addrs)?;
    let command =
        Some(shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" ")));
    let argv = match &places.relay_ns {
        Some(ns) => ns.exec_argv(&argv),
        None => argv,
    };
    let mut relay = RelayProcess::spawn(&spec.name, &argv, cleanup)?;
    let cgroup = match (cgroups, plan.relay_cpu) {
        (Some(root), Some(fraction)) => {
            let group = root.create(&spec.name, fraction, cleanup)?;
            group
                .add(relay.pid())
                .with_context(|| format!("path {}: capping the relay's CPU", spec.name))?;
            Some(group)
        }
        _ => None,
    };
    relay.wait_ready(addrs.listen, places.client_ns.as_ref())?;
    Ok(Route {
        name: spec.name.clone(),
        connect: addrs.listen,
        client_ns: places
            .client_ns
            .as_ref()
            .map(Netns::try_clone)
            .transpose()?,
        command,
        relay: Some(relay),
        _cgroup: cgroup,
    })
}

/// A path whose client connects straight to `connect` from namespace `ns`.
fn without_relay(
    spec: &PathSpec,
    connect: SocketAddr,
    ns: &Option<Netns>,
) -> anyhow::Result<Route> {
    Ok(Route {
        name: spec.name.clone(),
        connect,
        client_ns: ns.as_ref().map(Netns::try_clone).transpose()?,
        command: None,
        relay: None,
        _cgroup: None,
    })
}

/// `spliceway relay LISTEN UPSTREAM --mode MODE --threads 1 -q`, with this executable.
fn spliceway_relay_argv(mode: spliceway::Mode, addrs: RelayAddrs) -> anyhow::Result<Vec<String>> {
    let exe = std::env::current_exe().context("finding the spliceway executable")?;
    Ok([
        exe.to_string_lossy().as_ref(),
        "relay",
        &addrs.listen.to_string(),
        &addrs.upstream.to_string(),
        "--mode",
        &mode.to_string(),
        "--threads",
        "1",
        "-q",
    ]
    .into_iter()
    .map(String::from)
    .collect())
}

/// A port nobody listens on at `ip` (in namespace `ns`), for a relay to bind.
fn free_port(ns: Option<&Netns>, ip: IpAddr) -> anyhow::Result<u16> {
    netns::run_in(ns, || -> anyhow::Result<u16> {
        Ok(TcpListener::bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("finding a free port on {ip}"))?
            .local_addr()?
            .port())
    })?
}

/// Runs `work` in the path's client namespace and measures the relay's CPU time around it
/// (None for a path without a relay).
fn with_relay_cpu<T>(
    route: &Route,
    work: impl FnOnce() -> anyhow::Result<T> + Send,
) -> (anyhow::Result<T>, Option<f64>)
where
    T: Send,
{
    relay_cpu_around(route, || {
        netns::run_in(route.client_ns.as_ref(), work).and_then(|outcome| outcome)
    })
}

/// Runs `work` here and measures the relay's CPU time around it (None without a relay).
fn relay_cpu_around<T>(route: &Route, work: impl FnOnce() -> T) -> (T, Option<f64>) {
    let relay_pid = route.relay.as_ref().map(RelayProcess::pid);
    let cpu_before = relay_pid.and_then(cpu::process_tree_cpu);
    let outcome = work();
    let cpu_after = relay_pid.and_then(cpu::process_tree_cpu);
    let relay_cpu_seconds = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before).as_secs_f64()),
        _ => None,
    };
    (outcome, relay_cpu_seconds)
}

/// One run of a request workload (rtt, connect) on one path.
fn measure_requests_once(
    run: u32,
    route: &Route,
    workload: Workload,
    progress: &Progress,
) -> RunResult {
    let (outcome, relay_cpu_seconds) = with_relay_cpu(route, || match workload {
        Workload::RoundTrips {
            requests,
            message_bytes,
        } => round_trips::run(route.connect, requests, message_bytes, progress),
        Workload::Connections {
            requests,
            message_bytes,
            concurrency,
        } => connections::run(
            route.connect,
            requests,
            message_bytes,
            concurrency,
            progress,
        ),
        Workload::Upload => unreachable!("uploads are measured by measure_once"),
    });
    match outcome {
        Ok(Exchanges {
            started,
            finished,
            latencies,
            bytes_sent,
            intact,
        }) => {
            let seconds = finished.saturating_duration_since(started).as_secs_f64();
            let requests = latencies.len() as u64;
            RunResult {
                run,
                seconds: Some(seconds),
                relay_cpu_seconds,
                bytes_received: Some(bytes_sent),
                integrity: intact && Some(requests) == workload.requests(),
                requests: Some(requests),
                per_second: (seconds > 0.0).then(|| requests as f64 / seconds),
                relay_cpu_us_per_request: relay_cpu_seconds
                    .filter(|_| requests > 0)
                    .map(|cpu| cpu * 1e6 / requests as f64),
                latency: latencies.percentiles(),
                ..RunResult::default()
            }
        }
        Err(error) => RunResult::failed(run, &error, relay_cpu_seconds),
    }
}

/// One upload on one path, with the relay's CPU time around it.
fn measure_once(
    run: u32,
    route: &Route,
    payload: &Payload,
    job: &Job,
    sink: Option<&LocalSink>,
    progress: &Progress,
) -> RunResult {
    if let Some(sink) = sink {
        sink.clear_records();
    }
    if !job.shape().is_single() {
        // Its connections' threads enter the client namespace themselves.
        let (mut result, relay_cpu_seconds) = relay_cpu_around(route, || {
            job.run_once(
                run,
                route.connect,
                route.client_ns.as_ref(),
                payload,
                sink,
                progress,
            )
        });
        result.relay_cpu_seconds = relay_cpu_seconds;
        return result;
    }
    let (upload, relay_cpu_seconds) = with_relay_cpu(route, || {
        client::upload(route.connect, &payload.bytes, progress)
    });
    let size = payload.bytes.len() as u64;
    match upload {
        Ok(upload) => {
            let end = sink
                .and_then(LocalSink::take_record)
                .map_or(upload.answered, |record| record.eof);
            let seconds = end.saturating_duration_since(upload.started).as_secs_f64();
            RunResult {
                run,
                seconds: Some(seconds),
                mb_per_s: Some(mb_per_s(size, seconds)),
                relay_cpu_seconds,
                bytes_received: Some(upload.answer.bytes),
                integrity: upload.answer.bytes == size && upload.answer.sha256 == payload.sha256,
                ..RunResult::default()
            }
        }
        Err(error) => RunResult::failed(run, &error, relay_cpu_seconds),
    }
}

fn describe(runs: u32, path: &str, r: &RunResult) -> String {
    let mut line = format!("run {}/{runs} {path}:", r.run);
    if let (Some(s), Some(m)) = (r.seconds, r.mb_per_s) {
        line += &format!(" {s:.3} s, {m:.1} MB/s");
    }
    if let (Some(latency), Some(rate)) = (r.latency, r.per_second) {
        line += &format!(
            " p50 {:.1} us, p99 {:.1} us, {rate:.0}/s",
            latency.p50_us, latency.p99_us
        );
    }
    if let (Some(cpu), Some(_)) = (r.relay_cpu_us_per_request, r.latency) {
        line += &format!(", relay CPU {cpu:.1} us each");
    }
    if let Some(cpu) = r.relay_cpu_seconds {
        line += &format!(", relay CPU {cpu:.3} s");
    }
    line += if r.integrity {
        ", integrity ok"
    } else {
        ", integrity FAILED"
    };
    if let Some(bytes) = r.bytes_received
        && !r.integrity
    {
        line += &format!(" (sink received {bytes} bytes)");
    }
    if let Some(parts) = r.parts {
        line += &format!(
            ", {} parts answered, {} wrong",
            parts.answered, parts.failed
        );
    }
    if let Some(e) = &r.error {
        line += &format!(": {e}");
    }
    line
}
