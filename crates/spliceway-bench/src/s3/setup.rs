//! `--s3` flags into one [`S3Setup`]: the bucket and prefix, the endpoint (and what its name
//! resolved to), region, credentials, the TLS roots, and the paths (`direct`, each `--via`).
//! Its errors are usage errors (exit 2).

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use url::Url;

use crate::args::{BenchArgs, S3Direction};
use crate::error::usage;
use crate::s3::credentials::{self, Profile};
use crate::s3::http::Peer;

/// The AWS CLI's multipart defaults: 10 connections, 8 MiB parts, multipart from 8 MiB on.
pub(crate) const DEFAULT_STREAMS: u32 = 10;
pub(crate) const DEFAULT_PART_BYTES: u64 = 8 * 1024 * 1024;
/// S3's smallest part (all but the last) and its most parts.
const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;

/// One path to S3: its name and how its connections are made.
#[derive(Debug, Clone)]
pub(crate) struct S3Path {
    pub(crate) name: String,
    pub(crate) peer: Peer,
    /// `--via` as given (None for direct).
    pub(crate) via: Option<String>,
}

/// Everything a `--s3` run needs, checked.
#[derive(Debug)]
pub(crate) struct S3Setup {
    pub(crate) bucket: Bucket,
    pub(crate) prefix: String,
    pub(crate) credentials: Credentials,
    pub(crate) credentials_from: String,
    pub(crate) region: String,
    pub(crate) endpoint: Url,
    /// What the endpoint's name resolved to from this host.
    pub(crate) resolved: Vec<SocketAddr>,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) paths: Vec<S3Path>,
    pub(crate) size: usize,
    pub(crate) runs: u32,
    pub(crate) streams: u32,
    pub(crate) part_bytes: usize,
    pub(crate) direction: S3Direction,
    pub(crate) keep: bool,
    pub(crate) json: bool,
    pub(crate) quiet: bool,
}

impl S3Setup {
    pub(crate) fn from_args(args: &BenchArgs, target: &str) -> anyhow::Result<S3Setup> {
        refuse_other_flags(args)?;
        let (bucket_name, prefix) = parse_s3_url(target).map_err(usage)?;
        let profile_name = args
            .profile
            .clone()
            .or_else(|| env("AWS_PROFILE"))
            .unwrap_or_else(|| "default".to_owned());
        let profile = Profile::load(&profile_name)?;
        if args.profile.is_some() && !profile.found {
            return Err(usage(anyhow!(
                "profile {profile_name} is not in ~/.aws/config or ~/.aws/credentials"
            )));
        }
        let endpoint_given = args
            .endpoint_url
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| profile.get("endpoint_url").map(str::to_owned));
        let region = args
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| profile.get("region").map(str::to_owned));
        let region = match (region, &endpoint_given) {
            (Some(region), _) => region,
            // S3-compatible services mostly ignore the region; SigV4 still needs one.
            (None, Some(_)) => "us-east-1".to_owned(),
            (None, None) => {
                return Err(usage(anyhow!(
                    "no region: give --region (or AWS_REGION, or region in the profile)"
                )));
            }
        };
        let (endpoint, style) = match &endpoint_given {
            Some(url) => {
                let url =
                    Url::parse(url).map_err(|e| usage(anyhow!("--endpoint-url {url:?}: {e}")))?;
                (url, UrlStyle::Path)
            }
            None => {
                let url = Url::parse(&format!("https://s3.{region}.amazonaws.com"))
                    .map_err(|e| usage(anyhow!("region {region:?}: {e}")))?;
                // Virtual-hosted names hold the bucket; a dotted name breaks the wildcard
                // certificate, so such buckets go path-style, as the AWS CLI does.
                let style = if bucket_name.contains('.') {
                    UrlStyle::Path
                } else {
                    UrlStyle::VirtualHost
                };
                (url, style)
            }
        };
        let bucket = Bucket::new(endpoint.clone(), style, bucket_name.clone(), region.clone())
            .map_err(|e| usage(anyhow!("endpoint {endpoint}: {e:?}")))?;
        let base = bucket.base_url().clone();
        let host = base
            .host_str()
            .ok_or_else(|| usage(anyhow!("endpoint {endpoint} has no host")))?
            .to_owned();
        let port = base.port_or_known_default().unwrap_or(443);
        let host_header = match base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        let tls_name = match base.scheme() {
            "https" => Some(
                ServerName::try_from(host.clone())
                    .map_err(|e| usage(anyhow!("{host}: not a TLS server name: {e}")))?,
            ),
            _ => None,
        };
        let resolved: Vec<SocketAddr> = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| usage(anyhow!("the S3 endpoint {host} does not resolve: {e}")))?
            .collect();
        let (credentials, credentials_from) = credentials::find(args.profile.as_deref(), &profile)?;
        let tls = Arc::new(tls_config(&profile)?);

        let mut paths = vec![S3Path {
            name: "direct".to_owned(),
            peer: Peer {
                addrs: resolved.clone(),
                host_header: host_header.clone(),
                tls_name: tls_name.clone(),
                via: None,
            },
            via: None,
        }];
        for given in &args.via {
            let (name, addr) = parse_via(given).map_err(usage)?;
            if paths.iter().any(|p| p.name == name) {
                return Err(usage(anyhow!(
                    "--via {given}: path name {name} is taken; write NAME=HOST:PORT"
                )));
            }
            let addrs: Vec<SocketAddr> = addr
                .to_socket_addrs()
                .map_err(|e| usage(anyhow!("--via {given}: {addr} does not resolve: {e}")))?
                .collect();
            paths.push(S3Path {
                name: name.clone(),
                peer: Peer {
                    addrs,
                    host_header: host_header.clone(),
                    tls_name: tls_name.clone(),
                    via: Some(format!("{name} at {addr}")),
                },
                via: Some(addr),
            });
        }

        let size = usize::try_from(args.size)
            .map_err(|_| usage(anyhow!("--size {} is too large", args.size)))?;
        let streams = args.streams.unwrap_or(DEFAULT_STREAMS);
        let part_bytes = args.part_size.unwrap_or(DEFAULT_PART_BYTES);
        if part_bytes < MIN_PART_BYTES && args.size > part_bytes {
            return Err(usage(anyhow!(
                "--part-size {part_bytes}: S3 parts are at least 5 MiB (all but the last)"
            )));
        }
        if args.size.div_ceil(part_bytes) > MAX_PARTS {
            return Err(usage(anyhow!(
                "--size over --part-size makes more than S3's {MAX_PARTS} parts"
            )));
        }
        Ok(S3Setup {
            bucket,
            prefix,
            credentials,
            credentials_from,
            region,
            endpoint,
            resolved,
            tls,
            paths,
            size,
            runs: args.runs.unwrap_or(3),
            streams,
            part_bytes: part_bytes as usize,
            direction: args.direction.unwrap_or(S3Direction::Up),
            keep: args.keep,
            json: args.json,
            quiet: args.quiet,
        })
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The bench flags that mean nothing against S3.
fn refuse_other_flags(args: &BenchArgs) -> anyhow::Result<()> {
    let given = [
        ("--peer", !args.peers.is_empty()),
        (
            "--topology",
            args.topology != crate::args::Topology::Loopback,
        ),
        ("--relay-cpu", args.relay_cpu.is_some()),
        (
            "--workload",
            args.workload != crate::args::WorkloadKind::Upload,
        ),
        ("--requests", args.requests.is_some()),
        ("--message-size", args.message_size.is_some()),
        ("--concurrency", args.concurrency.is_some()),
        ("--pattern", args.pattern.is_some()),
        ("--internet-rate", args.internet_rate.is_some()),
        ("--vpc-rate", args.vpc_rate.is_some()),
        ("--link", args.link.is_some()),
        ("--nic", args.nic.is_some()),
        ("--tbf-burst", args.tbf_burst.is_some()),
        ("--plot", args.plot.is_some()),
        ("--compare", !args.compare.is_empty()),
        ("--kernel-counters", args.kernel_counters),
    ];
    for (flag, present) in given {
        if present {
            return Err(usage(anyhow!(
                "{flag} does not apply to --s3 (it always uploads the AWS CLI's way, over \
                 the real network)"
            )));
        }
    }
    Ok(())
}

/// Splits `s3://BUCKET[/PREFIX]`; the prefix, if any, ends with '/'.
pub(crate) fn parse_s3_url(text: &str) -> anyhow::Result<(String, String)> {
    let rest = text
        .strip_prefix("s3://")
        .ok_or_else(|| anyhow!("--s3 {text:?}: give s3://BUCKET or s3://BUCKET/PREFIX"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !valid {
        return Err(anyhow!(
            "--s3 {text:?}: {bucket:?} is not a bucket name (3-63 lower-case letters, digits, \
             '-' and '.')"
        ));
    }
    let prefix = match prefix.trim_end_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    };
    Ok((bucket.to_owned(), prefix))
}

/// Splits `--via [NAME=]HOST:PORT`; a bare address is named `relay`.
pub(crate) fn parse_via(text: &str) -> anyhow::Result<(String, String)> {
    let (name, addr) = match text.split_once('=') {
        Some((name, addr)) => (name.trim(), addr.trim()),
        None => ("relay", text.trim()),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(anyhow!(
            "--via {text:?}: the name must be letters, digits, '-', '_' or '.'"
        ));
    }
    if addr
        .rsplit_once(':')
        .is_none_or(|(_, p)| p.parse::<u16>().is_err())
    {
        return Err(anyhow!("--via {text:?}: give [NAME=]HOST:PORT"));
    }
    Ok((name.to_owned(), addr.to_owned()))
}

/// The roots TLS trusts: `AWS_CA_BUNDLE` or the profile's `ca_bundle` alone (as the AWS CLI
/// does), else the system's store.
fn tls_config(profile: &Profile) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let bundle = env("AWS_CA_BUNDLE").or_else(|| profile.get("ca_bundle").map(str::to_owned));
    match bundle {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
                .and_then(|i| i.collect())
                .map_err(|e| usage(anyhow!("CA bundle {path}: {e}")))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(usage(anyhow!("CA bundle {path}: no certificate in it")));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(usage(anyhow!(
                    "no CA certificates found on this system (install ca-certificates, or \
                     set AWS_CA_BUNDLE)"
                )));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls() {
        assert_eq!(
            parse_s3_url("s3://my-bucket").unwrap(),
            ("my-bucket".into(), String::new())
        );
        assert_eq!(
            parse_s3_url("s3://my-bucket/a/b/").unwrap(),
            ("my-bucket".into(), "a/b/".into())
        );
        assert!(parse_s3_url("my-bucket").is_err());
        assert!(parse_s3_url("s3://").is_err());
        assert!(parse_s3_url("s3://UPPER").is_err());
    }

    #[test]
    fn vias() {
        assert_eq!(
            parse_via("127.0.0.1:443").unwrap(),
            ("relay".into(), "127.0.0.1:443".into())
        );
        assert_eq!(
            parse_via("haproxy=relay.example:8443").unwrap(),
            ("haproxy".into(), "relay.example:8443".into())
        );
        assert!(parse_via("x=nohost").is_err());
        assert!(parse_via("bad name=h:1").is_err());
    }
}
