//! Network namespaces, in one implementation: the bench's emulated topology (`topology.rs`,
//! `spliceway bench --topology`) and the test suites' namespaces (`spliceway-test-kit`) are
//! both built on this module's [`Netns`], so that creating a namespace, joining two with a veth
//! pair, entering one and deleting it are written once.
//!
//! A [`Netns`] is a handle, not an owner: it is cloned for the threads that enter the namespace
//! ([`Netns::try_clone`]), so dropping it deletes nothing. Whoever creates a namespace decides
//! when it goes ([`delete`]): the bench through its cleanup registry (also on Ctrl-C), the test
//! kit when its own `Netns` is dropped (also while a test panics).
//!
//! `setns` moves only the calling thread, so code that must run inside a namespace runs on a
//! thread that entered it ([`Netns::run`], [`Netns::enter`]); a socket stays in the namespace it
//! was created in whatever thread uses it later. Everything here drives the `ip` tool, as the
//! bench's documentation tells users to do by hand.

pub(crate) mod interception;
pub(crate) mod topology;

use std::fs::File;
use std::process::Command;

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};

/// A network namespace, open so that threads can enter it. Dropping it leaves the namespace in
/// place (see the module's documentation).
#[derive(Debug)]
pub struct Netns {
    name: String,
    file: File,
}

impl Netns {
    /// Creates namespace `name` (`ip netns add`), brings its `lo` up and opens it. If a step
    /// after the creation fails, deletes the namespace again before returning the error.
    pub fn add(name: &str) -> anyhow::Result<Netns> {
        command("ip", &["netns", "add", name])?;
        let opened = command("ip", &["-n", name, "link", "set", "lo", "up"]).and_then(|_| {
            File::open(format!("/run/netns/{name}"))
                .with_context(|| format!("opening namespace {name}"))
        });
        match opened {
            Ok(file) => Ok(Netns {
                name: name.to_owned(),
                file,
            }),
            Err(e) => {
                delete(name);
                Err(e)
            }
        }
    }

    /// Its name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Another handle on the same namespace, for a thread that outlives the borrow.
    pub fn try_clone(&self) -> anyhow::Result<Netns> {
        Ok(Netns {
            name: self.name.clone(),
            file: self.file.try_clone()?,
        })
    }

    /// Moves the calling thread into this namespace, for long-lived threads (servers, sinks).
    pub fn enter(&self) -> anyhow::Result<()> {
        setns(&self.file, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering network namespace {}", self.name))
    }

    /// Runs `f` on a thread that entered this namespace and returns its result; a panic in
    /// `f` is resumed on the calling thread.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.enter()?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs `ip -n <this namespace> ARGS...`; returns its standard output.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        command("ip", &all)
    }

    /// Adds a veth pair: `here` in this namespace, `there` in `other`, both up, with the
    /// addresses `here_addr` and `there_addr` (CIDR, such as `10.77.1.1/24`) if given. The
    /// ends are created inside the namespaces, so the host's namespace is never touched.
    pub fn veth(
        &self,
        here: &str,
        other: &Netns,
        there: &str,
        here_addr: Option<&str>,
        there_addr: Option<&str>,
    ) -> anyhow::Result<()> {
        self.ip(&[
            "link",
            "add",
            here,
            "type",
            "veth",
            "peer",
            "name",
            there,
            "netns",
            &other.name,
        ])?;
        if let Some(addr) = here_addr {
            self.ip(&["addr", "add", addr, "dev", here])?;
        }
        if let Some(addr) = there_addr {
            other.ip(&["addr", "add", addr, "dev", there])?;
        }
        self.ip(&["link", "set", here, "up"])?;
        other.ip(&["link", "set", there, "up"])?;
        Ok(())
    }

    /// `ip netns exec NAME` followed by `argv`: a command line that runs inside this namespace
    /// (a relay process, `ethtool`, `ss`).
    pub fn exec_argv(&self, argv: &[String]) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .into_iter()
            .map(String::from)
            .chain(argv.iter().cloned())
            .collect()
    }
}

/// Runs `f` on a thread inside `ns`, or on this thread when `ns` is `None` (the bench's paths
/// without the emulated topology).
pub(crate) fn run_in<T: Send>(
    ns: Option<&Netns>,
    f: impl FnOnce() -> T + Send,
) -> anyhow::Result<T> {
    match ns {
        Some(ns) => ns.run(f),
        None => Ok(f()),
    }
}

/// Deletes namespace `name` (the veth ends inside it go with it); returns whether `ip` did.
/// A namespace that is already gone is no error for the callers, which decide whether to say
/// anything.
pub fn delete(name: &str) -> bool {
    Command::new("ip")
        .args(["netns", "delete", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The names of the namespaces `ip netns list` shows, for removing what a crashed run left.
pub fn names() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Runs `program ARGS...`; returns its standard output, or an error that quotes the command
/// and its error output.
pub fn command(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
