//! The Kubernetes manifests in packaging/kubernetes parse, and agree with each other and with
//! the configuration they carry: the probes' paths and port, the grace period against the drain
//! delay and timeout, the NLB's PROXY protocol against `accept_proxy`, the health check against
//! the metrics port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use spliceway_config::Config;
use yaml_rust2::{Yaml, YamlLoader};

fn manifest(name: &str) -> Yaml {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../packaging/kubernetes")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(docs.len(), 1, "{name}: one document");
    docs.remove(0)
}

/// The string at `path` (keys, or indices for lists) in `doc`.
fn at<'a>(doc: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter()
        .fold(doc, |node, key| match key.parse::<usize>() {
            Ok(i) => &node[i],
            Err(_) => &node[*key],
        })
}

fn text<'a>(doc: &'a Yaml, path: &[&str]) -> &'a str {
    at(doc, path)
        .as_str()
        .unwrap_or_else(|| panic!("no string at {path:?}"))
}

/// The configuration the ConfigMap carries, read (and checked) as `spliceway run` would.
fn config() -> Config {
    let map = manifest("configmap.yaml");
    assert_eq!(text(&map, &["kind"]), "ConfigMap");
    let toml = text(&map, &["data", "spliceway.toml"]);
    Config::from_str(toml, Path::new("configmap.yaml:spliceway.toml"))
        .unwrap_or_else(|e| panic!("the ConfigMap's configuration: {e}"))
}

#[test]
fn the_deployment_probes_and_grace_period_fit_the_configuration() {
    let config = config();
    let deployment = manifest("deployment.yaml");
    assert_eq!(text(&deployment, &["kind"]), "Deployment");
    let pod = at(&deployment, &["spec", "template", "spec"]);
    let container = at(pod, &["containers", "0"]);
    let port_named = |name: &str| {
        container["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("no port {name}"))
    };
    let metrics = config.metrics().expect("metrics are on");
    assert!(
        metrics.ip().is_unspecified(),
        "the kubelet probes the pod's address"
    );
    assert_eq!(port_named("metrics"), i64::from(metrics.port()));
    let routes = config.routes().unwrap();
    assert_eq!(
        port_named("relay"),
        i64::from(routes[0].listen_addrs()[0].port())
    );
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(text(container, &[probe, "httpGet", "path"]), path);
        assert_eq!(text(container, &[probe, "httpGet", "port"]), "metrics");
    }
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    let drain = config.drain_delay() + config.drain_timeout();
    assert!(
        Duration::from_secs(grace as u64) > drain,
        "terminationGracePeriodSeconds {grace} must exceed drain_delay + drain_timeout ({drain:?})"
    );
    let volume = at(pod, &["volumes", "0", "configMap", "name"]);
    assert_eq!(volume.as_str(), Some("spliceway"));
    let args: Vec<&str> = container["args"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(args, ["run", "--config", "/etc/spliceway/spliceway.toml"]);
}

#[test]
fn the_service_asks_for_an_nlb_with_proxy_protocol_v2_checking_readyz() {
    let config = config();
    let service = manifest("service.yaml");
    assert_eq!(text(&service, &["spec", "type"]), "LoadBalancer");
    let note = |key: &str| text(&service, &["metadata", "annotations", key]).to_string();
    let prefix = "service.beta.kubernetes.io/aws-load-balancer-";
    assert_eq!(note(&format!("{prefix}type")), "external");
    assert_eq!(note(&format!("{prefix}proxy-protocol")), "*");
    assert_eq!(note(&format!("{prefix}healthcheck-path")), "/readyz");
    assert_eq!(
        note(&format!("{prefix}healthcheck-port")),
        config.metrics().unwrap().port().to_string()
    );
    let routes = config.routes().unwrap();
    assert!(
        routes[0].connection_options().accept_proxy.is_some(),
        "an NLB with proxy-protocol needs accept_proxy on the route"
    );
    let trusted = routes[0]
        .proxy_peers()
        .expect("accept_proxy_from names the NLB's addresses");
    assert!(
        trusted.iter().all(|net| net.prefix_len() > 0),
        "a header is not believed from every address: {trusted:?}"
    );
    assert_eq!(
        text(&service, &["spec", "ports", "0", "targetPort"]),
        "relay"
    );
    let attributes = note(&format!("{prefix}target-group-attributes"));
    let delay: u64 = attributes
        .split(',')
        .find_map(|a| a.strip_prefix("deregistration_delay.timeout_seconds="))
        .expect("a deregistration delay")
        .parse()
        .unwrap();
    assert!(
        Duration::from_secs(delay) >= config.drain_delay(),
        "the NLB stops choosing the target before it stops accepting"
    );
}

#[test]
fn the_disruption_budget_selects_the_pods() {
    let budget = manifest("poddisruptionbudget.yaml");
    let deployment = manifest("deployment.yaml");
    assert_eq!(text(&budget, &["kind"]), "PodDisruptionBudget");
    let selector = at(&budget, &["spec", "selector", "matchLabels"]);
    let labels = at(&deployment, &["spec", "template", "metadata", "labels"]);
    assert_eq!(selector, labels);
    let replicas = deployment["spec"]["replicas"].as_i64().unwrap();
    let min = budget["spec"]["minAvailable"].as_i64().unwrap();
    assert!(min >= 1 && min < replicas, "{min} of {replicas}");
}

/// Issue 24: any pod could reach the relay port and send a PROXY header claiming an office
/// address. The NetworkPolicy admits only the range the route believes headers from.
#[test]
fn a_network_policy_admits_only_the_balancers_range_to_the_relay() {
    let config = config();
    let policy = manifest("networkpolicy.yaml");
    assert_eq!(text(&policy, &["kind"]), "NetworkPolicy");
    let deployment = manifest("deployment.yaml");
    assert_eq!(
        at(&policy, &["spec", "podSelector", "matchLabels"]),
        at(&deployment, &["spec", "template", "metadata", "labels"]),
        "the policy selects the relay's pods"
    );
    let rules = at(&policy, &["spec", "ingress"]).as_vec().unwrap();
    let relay_rule = rules
        .iter()
        .find(|rule| {
            rule["ports"]
                .as_vec()
                .is_some_and(|ports| ports.iter().any(|p| p["port"].as_str() == Some("relay")))
        })
        .expect("a rule for the relay port");
    let sources: Vec<ipnet::IpNet> = relay_rule["from"]
        .as_vec()
        .expect("the relay port admits named sources only")
        .iter()
        .map(|from| {
            from["ipBlock"]["cidr"]
                .as_str()
                .expect("ipBlock sources")
                .parse()
                .unwrap()
        })
        .collect();
    let trusted = config.routes().unwrap()[0].proxy_peers().unwrap().to_vec();
    assert_eq!(
        sources, trusted,
        "the NetworkPolicy and accept_proxy_from name the same range"
    );
}

/// A Kubernetes quantity of memory ("512Mi", "1Gi", "500M", "1048576") in bytes.
fn memory_bytes(quantity: &str) -> u64 {
    let units: [(&str, u64); 6] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(number) = quantity.strip_suffix(suffix) {
            return number.parse::<u64>().unwrap() * factor;
        }
    }
    quantity.parse().unwrap()
}

/// A Kubernetes quantity of CPU ("2", "1500m") in millicores.
fn millicores(quantity: &str) -> u64 {
    match quantity.strip_suffix('m') {
        Some(milli) => milli.parse().unwrap(),
        None => (quantity.parse::<f64>().unwrap() * 1000.0) as u64,
    }
}

/// The container's limit `name` ("cpu", "memory"), as written.
fn limit(container: &Yaml, name: &str) -> String {
    let value = &container["resources"]["limits"][name];
    value
        .as_str()
        .map(str::to_string)
        .or_else(|| value.as_i64().map(|n| n.to_string()))
        .unwrap_or_else(|| panic!("no {name} limit"))
}

/// Issue 25: the Deployment had no CPU limit while `threads = 0` starts one worker per CPU of
/// the node, each with a 256 MiB pipe budget, against a 512 MiB memory limit. The ConfigMap
/// sets threads and pipe_budget from the limits; their pipes fit in the memory limit with room
/// to spare.
#[test]
fn threads_and_pipe_budget_fit_the_limits() {
    let config = config();
    let deployment = manifest("deployment.yaml");
    let container = at(
        &deployment,
        &["spec", "template", "spec", "containers", "0"],
    );
    let cpu = millicores(&limit(container, "cpu"));
    let memory = memory_bytes(&limit(container, "memory"));
    let threads = config
        .threads()
        .expect("threads is set: 0 would mean one per CPU of the node") as u64;
    assert!(
        threads * 1000 <= cpu.div_ceil(1000) * 1000,
        "{threads} threads for a CPU limit of {cpu}m"
    );
    let budget = config.pool_limits().pipe_budget_bytes as u64;
    let connections = config
        .max_connections()
        .expect("max_connections bounds the small pipes past the budget")
        as u64;
    // Past the budget each connection's two directions take 16 KiB pipes.
    let pipes = threads * budget + connections * 2 * 16 * 1024;
    assert!(
        pipes * 4 <= memory * 3,
        "pipes ({threads} x {budget} + {connections} x 32 KiB = {pipes} bytes) leave less than \
         a quarter of the memory limit ({memory} bytes) for socket buffers and the process"
    );
}

/// Issue 25: 9898 was in no Service and nothing told Prometheus to scrape it. A ClusterIP
/// Service (never the NLB) and a PodMonitor name the pods' metrics port.
#[test]
fn the_metrics_service_and_the_pod_monitor_name_the_metrics_port() {
    let config = config();
    let deployment = manifest("deployment.yaml");
    let template = at(&deployment, &["spec", "template"]);
    let labels = at(template, &["metadata", "labels"]);
    let container = at(template, &["spec", "containers", "0"]);
    let ports: Vec<(&str, i64)> = container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    let metrics_port = i64::from(config.metrics().unwrap().port());
    assert!(ports.contains(&("metrics", metrics_port)), "{ports:?}");

    let service = manifest("metrics-service.yaml");
    assert_eq!(text(&service, &["kind"]), "Service");
    assert_eq!(
        text(&service, &["spec", "type"]),
        "ClusterIP",
        "metrics are not for the NLB"
    );
    assert_eq!(at(&service, &["spec", "selector"]), labels);
    let target = text(&service, &["spec", "ports", "0", "targetPort"]);
    assert!(ports.iter().any(|(name, _)| *name == target), "{target}");
    // The NLB's Service does not carry the metrics port.
    let nlb = manifest("service.yaml");
    for port in nlb["spec"]["ports"].as_vec().unwrap() {
        assert_ne!(port["targetPort"].as_str(), Some("metrics"));
    }

    let monitor = manifest("monitoring/podmonitor.yaml");
    assert_eq!(text(&monitor, &["apiVersion"]), "monitoring.coreos.com/v1");
    assert_eq!(text(&monitor, &["kind"]), "PodMonitor");
    assert_eq!(at(&monitor, &["spec", "selector", "matchLabels"]), labels);
    let endpoints = at(&monitor, &["spec", "podMetricsEndpoints"])
        .as_vec()
        .unwrap();
    assert!(!endpoints.is_empty());
    for endpoint in endpoints {
        let port = endpoint["port"].as_str().unwrap();
        assert!(
            ports.iter().any(|(name, _)| *name == port),
            "the PodMonitor's port {port} is a port of the pod: {ports:?}"
        );
        assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    }
}

/// The README says how a ConfigMap change reaches the relays.
#[test]
fn the_readme_says_a_configmap_change_needs_a_rollout_or_sighup() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/kubernetes/README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    assert!(readme.contains("kubectl rollout restart deployment/spliceway"));
    assert!(readme.contains("SIGHUP"));
}
