//! The AWS credential chain, as the AWS CLI walks it for the credentials a bench needs:
//! `--profile` (its keys in the shared credentials or config file), else the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), else the profile named
//! by `AWS_PROFILE` or `default`, else the EC2 instance's role through IMDSv2 (the VPC path is
//! measured from an instance). Profiles that need another service to get keys (`role_arn`,
//! SSO, `credential_process`) are refused with the command that exports keys instead.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use rusty_s3::Credentials;
use rusty_s3::credentials::Ec2SecurityCredentialsMetadataResponse;

use crate::error::usage;

/// The instance metadata service: link-local, answered by the hypervisor.
const IMDS_DEFAULT: &str = "169.254.169.254:80";

/// IMDS answers in microseconds on an instance; elsewhere nothing answers at all.
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);

/// One profile's settings from `~/.aws/config` and `~/.aws/credentials` (credentials win).
#[derive(Debug, Default)]
pub(crate) struct Profile {
    pub(crate) name: String,
    pub(crate) settings: HashMap<String, String>,
    /// Whether either file had a section for it.
    pub(crate) found: bool,
}

impl Profile {
    /// Reads profile `name` from the files `AWS_CONFIG_FILE` and `AWS_SHARED_CREDENTIALS_FILE`
    /// name (default `~/.aws/config`, `~/.aws/credentials`). A file that does not exist is
    /// skipped; one that does not parse is an error naming it.
    pub(crate) fn load(name: &str) -> anyhow::Result<Profile> {
        let mut profile = Profile {
            name: name.to_owned(),
            ..Profile::default()
        };
        let config_section = if name == "default" {
            "default".to_owned()
        } else {
            format!("profile {name}")
        };
        for (path, section) in [
            (
                aws_file("AWS_CONFIG_FILE", "config"),
                config_section.as_str(),
            ),
            (aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials"), name),
        ] {
            let Some(path) = path else { continue };
            if !path.exists() {
                continue;
            }
            let ini = ini::Ini::load_from_file(&path)
                .map_err(|e| usage(anyhow!("{}: {e}", path.display())))?;
            // In the config file a non-default profile may also be written [NAME].
            let props = ini
                .section(Some(section))
                .or_else(|| ini.section(Some(name)));
            if let Some(props) = props {
                profile.found = true;
                for (key, value) in props.iter() {
                    profile.settings.insert(key.to_owned(), value.to_owned());
                }
            }
        }
        Ok(profile)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.settings
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The profile's own keys, or None when it has none; an error when it needs a service
    /// this bench does not call.
    fn keys(&self) -> anyhow::Result<Option<Credentials>> {
        if let (Some(key), Some(secret)) = (
            self.get("aws_access_key_id"),
            self.get("aws_secret_access_key"),
        ) {
            return Ok(Some(match self.get("aws_session_token") {
                Some(token) => Credentials::new_with_token(key, secret, token),
                None => Credentials::new(key, secret),
            }));
        }
        for key in [
            "role_arn",
            "sso_session",
            "sso_start_url",
            "credential_process",
        ] {
            if self.get(key).is_some() {
                return Err(usage(anyhow!(
                    "profile {} gets its credentials through {key}, which spliceway bench does \
                     not call; export keys first: eval \"$(aws configure export-credentials \
                     --profile {} --format env)\"",
                    self.name,
                    self.name
                )));
            }
        }
        Ok(None)
    }
}

fn aws_file(variable: &str, name: &str) -> Option<PathBuf> {
    match std::env::var_os(variable) {
        Some(path) => Some(PathBuf::from(path)),
        None => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".aws").join(name)),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Where the credentials came from, for the report.
pub(crate) fn find(
    explicit_profile: Option<&str>,
    profile: &Profile,
) -> anyhow::Result<(Credentials, String)> {
    if explicit_profile.is_none()
        && let (Some(key), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    {
        let credentials = match env("AWS_SESSION_TOKEN") {
            Some(token) => Credentials::new_with_token(key, secret, token),
            None => Credentials::new(key, secret),
        };
        return Ok((credentials, "environment".to_owned()));
    }
    if let Some(credentials) = profile.keys()? {
        return Ok((credentials, format!("profile {}", profile.name)));
    }
    if explicit_profile.is_some() {
        return Err(usage(anyhow!(
            "profile {} {} no credentials (aws_access_key_id and aws_secret_access_key)",
            profile.name,
            if profile.found {
                "has"
            } else {
                "was not found in ~/.aws/config or ~/.aws/credentials, so it has"
            }
        )));
    }
    let disabled = env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !disabled {
        match from_imds() {
            Ok(credentials) => return Ok((credentials, "EC2 instance role (IMDSv2)".to_owned())),
            Err(error) => tracing::debug!("no instance role: {error:#}"),
        }
    }
    Err(usage(anyhow!(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, give --profile, \
         write ~/.aws/credentials (aws configure), or run on an EC2 instance with a role"
    )))
}

/// The instance role's keys through IMDSv2: a session token first (PUT), then the role's
/// name and its keys. `AWS_EC2_METADATA_SERVICE_ENDPOINT` moves it, as for the AWS CLI.
fn from_imds() -> anyhow::Result<Credentials> {
    let host = env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .map(|url| {
            url.trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned()
        })
        .unwrap_or_else(|| IMDS_DEFAULT.to_owned());
    let host = if host.contains(':') {
        host
    } else {
        format!("{host}:80")
    };
    let addr: SocketAddr = host
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow!("{host} does not resolve"))?;
    let token = imds_request(
        addr,
        "PUT",
        "/latest/api/token",
        "X-aws-ec2-metadata-token-ttl-seconds: 300",
    )?;
    let token_header = format!("X-aws-ec2-metadata-token: {}", token.trim());
    let roles = imds_request(
        addr,
        "GET",
        "/latest/meta-data/iam/security-credentials/",
        &token_header,
    )?;
    let role = roles
        .lines()
        .next()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| anyhow!("the instance has no IAM role"))?;
    let json = imds_request(
        addr,
        "GET",
        &format!("/latest/meta-data/iam/security-credentials/{role}"),
        &token_header,
    )?;
    Ok(Ec2SecurityCredentialsMetadataResponse::deserialize(&json)
        .context("reading the instance role's credentials")?
        .into_credentials())
}

/// One plain-HTTP request to IMDS (HTTP/1.0, the body read to the end).
fn imds_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    header: &str,
) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, IMDS_TIMEOUT)?;
    stream.set_read_timeout(Some(IMDS_TIMEOUT))?;
    stream.set_write_timeout(Some(IMDS_TIMEOUT))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{header}\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.take(1 << 20).read_to_string(&mut answer)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("IMDS: no answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        bail!("IMDS answered {status} to {method} {path}");
    }
    Ok(body.to_owned())
}
