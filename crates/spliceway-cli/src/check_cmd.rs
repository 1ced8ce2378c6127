//! `spliceway check --config FILE [--resolve]`: read and check a configuration file, print
//! what it describes, bind nothing; with `--resolve`, also look up every upstream name as
//! `run` would at start-up.

use spliceway::{Resolution, Route, Upstream, UpstreamAddr};
use spliceway_config::Config;

use crate::cli::CheckArgs;
use crate::exit;

/// Checks the file; exits 78 (through the error) when it is invalid, 2 when `--resolve` finds
/// a name that does not resolve (the status `run` would exit with).
pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let config = Config::from_file(&args.config).map_err(exit::config)?;
    // Builds the DNS resolvers too, so that `resolver = "dns"` without a usable
    // /etc/resolv.conf fails here and not at start-up.
    let routes = config.routes().map_err(exit::config)?;
    if !args.quiet {
        print!("{}", config.summary());
    }
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    if args.resolve {
        resolve_all(&routes)?;
    }
    Ok(())
}

/// Looks up every upstream name of `routes` once, printing what each resolves to.
fn resolve_all(routes: &[Route]) -> anyhow::Result<()> {
    let system = Resolution::system();
    let mut failed = Vec::new();
    for route in routes {
        let resolution = route.resolver().unwrap_or(&system);
        let names: Vec<&UpstreamAddr> = match route.upstream() {
            Upstream::Fixed(addr) => vec![addr],
            Upstream::Sni(table) => table
                .entries()
                .iter()
                .filter_map(|e| e.upstream.as_ref())
                .collect(),
            Upstream::Group(group) => group.servers().iter().map(|s| s.address()).collect(),
            _ => Vec::new(),
        };
        for upstream in names {
            let UpstreamAddr::Name { host, port } = upstream else {
                continue;
            };
            match resolution.lookup(host, *port) {
                Ok((addrs, _)) if !addrs.is_empty() => {
                    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                    println!(
                        "resolve   route {:?}: {upstream} -> {}",
                        route.name(),
                        list.join(", ")
                    );
                }
                Ok(_) => failed.push(format!(
                    "route {:?}: {upstream}: the name has no addresses",
                    route.name()
                )),
                Err(e) => failed.push(format!("route {:?}: {upstream}: {e}", route.name())),
            }
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(exit::usage(anyhow::anyhow!(
        "upstream names that do not resolve (run would exit 2 at start-up):\n  {}",
        failed.join("\n  ")
    )))
}
