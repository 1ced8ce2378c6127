//! Dropping root after the listening sockets are bound (`user` and `group` in the
//! configuration).
//!
//! Two ways to run on port 443 without keeping root:
//!
//! - start as root with `user = "spliceway"`: the relay binds, then calls `setgroups([gid])`,
//!   `setgid`, `setuid` (glibc applies them to every thread) and checks that `setuid(0)` now
//!   fails — if it does not, it refuses to start;
//! - start unprivileged with `CAP_NET_BIND_SERVICE` (systemd `AmbientCapabilities=`,
//!   `User=`/`DynamicUser=`): there is nothing to drop, and `user`/`group` are skipped with a
//!   log line.
//!
//! The thread that drops keeps one capability, `CAP_NET_BIND_SERVICE` (`PR_SET_KEEPCAPS`, then
//! every other capability cleared), and the signal, reload, control and worker threads started
//! after it inherit it: a reload can then bind a new listener below port 1024, as under
//! systemd. Nothing else is kept; `setuid(0)` still fails.
//!
//! The capability is also put in the inheritable and ambient sets, because a process that is
//! not root keeps capabilities across `execve` only through the ambient set (and the kernel
//! admits a capability there only if it is permitted and inheritable): without it the process
//! `spliceway upgrade` starts (the control thread spawns it, hence the bit in every thread
//! started after the drop) ran as the user without the capability, and its reloads could no
//! longer bind low ports (issue 24, finding 7). It is exactly the state systemd's
//! `AmbientCapabilities=CAP_NET_BIND_SERVICE` gives, so the new process finds itself where a
//! relay started by the unit starts: not root, nothing to drop, the capability held. A relay
//! that did not keep the capability raises nothing, and its successor has none either.

//!
//! Interception needs one more capability, `CAP_NET_ADMIN`: `IP_TRANSPARENT` on a route's
//! listeners (`transparent = true`, for TPROXY) and on every upstream socket that binds the
//! client's address (`source = "client"`). A relay whose routes need it checks that it holds it
//! before it binds anything ([`require_net_admin`]), and keeps it through the drop beside
//! `CAP_NET_BIND_SERVICE` (the packaged unit's `AmbientCapabilities=` lists both for such a
//! relay; docs/operations.md).

use anyhow::{Context as _, bail};
use nix::unistd::{
    Gid, Group, Uid, User, getegid, geteuid, getgid, getuid, setgid, setgroups, setuid,
};

use crate::exit;

/// What [`drop_to`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Neither `user` nor `group` is set.
    NotAsked,
    /// Not running as root: nothing to drop.
    AlreadyUnprivileged { uid: u32, gid: u32 },
    /// Switched to this user and group.
    Dropped { uid: u32, gid: u32 },
}

fn find_user(name: &str) -> anyhow::Result<User> {
    let found = match name.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(name),
    };
    found
        .with_context(|| format!("looking up user {name:?}"))?
        .with_context(|| format!("user {name:?} does not exist"))
}

fn find_group(name: &str) -> anyhow::Result<Gid> {
    let found = match name.parse::<u32>() {
        Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
        Err(_) => Group::from_name(name),
    };
    Ok(found
        .with_context(|| format!("looking up group {name:?}"))?
        .with_context(|| format!("group {name:?} does not exist"))?
        .gid)
}

/// The uid and gid [`drop_to`] will switch to, when it will (running as root, `user` or
/// `group` set): who files made before the drop must belong to.
///
/// # Errors
///
/// As [`drop_to`], for an unknown user or group.
pub fn target(user: Option<&str>, group: Option<&str>) -> anyhow::Result<Option<(u32, u32)>> {
    if (user.is_none() && group.is_none()) || !geteuid().is_root() {
        return Ok(None);
    }
    let target_user = user.map(find_user).transpose().map_err(exit::config)?;
    let gid = match (group, &target_user) {
        (Some(g), _) => find_group(g).map_err(exit::config)?,
        (None, Some(u)) => u.gid,
        (None, None) => getgid(),
    };
    let uid = target_user.map_or_else(getuid, |u| u.uid);
    Ok(Some((uid.as_raw(), gid.as_raw())))
}

/// What in `routes` needs `CAP_NET_ADMIN`, in words for the error (`route "r": transparent =
/// true`), or `None`.
pub fn net_admin_needed<'a>(
    routes: impl IntoIterator<Item = &'a spliceway::Route>,
) -> Option<String> {
    routes.into_iter().find_map(|route| {
        let options = route.connection_options();
        if options.transparent {
            Some(format!(
                "route {:?}: transparent = true (TPROXY)",
                route.name()
            ))
        } else if options.source == spliceway::Source::Client {
            Some(format!("route {:?}: source = \"client\"", route.name()))
        } else {
            None
        }
    })
}

/// Refuses to start, with a clear error (a usage error, exit status 2, as a port that needs
/// `CAP_NET_BIND_SERVICE`), when `needed` names a setting that needs `CAP_NET_ADMIN` and this
/// process does not hold it.
///
/// # Errors
///
/// The capability is missing (or the capabilities cannot be read).
pub fn require_net_admin(needed: Option<&str>) -> anyhow::Result<()> {
    let Some(what) = needed else { return Ok(()) };
    let held = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_NET_ADMIN,
    )
    .unwrap_or(false);
    if held {
        return Ok(());
    }
    Err(exit::usage(anyhow::anyhow!(
        "{what} needs CAP_NET_ADMIN (IP_TRANSPARENT), which this process does not hold: \
         start it as root, or under systemd with AmbientCapabilities=CAP_NET_BIND_SERVICE \
         CAP_NET_ADMIN (docs/operations.md, \"Relaying without touching the clients\")"
    )))
}

/// Switches to `user` and `group` (names or numeric ids) if running as root.
///
/// # Errors
///
/// An unknown user or group is a configuration error (exit status 78); a failed switch, or
/// one after which `setuid(0)` still succeeds, is a plain error: the relay must not run.
pub fn drop_to(
    user: Option<&str>,
    group: Option<&str>,
    net_admin: bool,
) -> anyhow::Result<Outcome> {
    if user.is_none() && group.is_none() {
        if geteuid().is_root() {
            tracing::warn!(
                "running as root: set user = \"...\" in the configuration to drop privileges \
                 after binding, or run under systemd with CAP_NET_BIND_SERVICE"
            );
        }
        return Ok(Outcome::NotAsked);
    }
    let target_user = user.map(find_user).transpose().map_err(exit::config)?;
    let target_gid = match (group, &target_user) {
        (Some(g), _) => Some(find_group(g).map_err(exit::config)?),
        (None, Some(u)) => Some(u.gid),
        (None, None) => None,
    };
    if !geteuid().is_root() {
        let (uid, gid) = (getuid().as_raw(), getgid().as_raw());
        let same = target_user.as_ref().is_none_or(|u| u.uid.as_raw() == uid)
            && target_gid.is_none_or(|g| g.as_raw() == gid);
        if same {
            // What a relay started by `spliceway upgrade` after a drop from root finds too.
            let bind = caps::has_cap(
                None,
                caps::CapSet::Effective,
                caps::Capability::CAP_NET_BIND_SERVICE,
            )
            .unwrap_or(false);
            tracing::info!(
                "already running as uid {uid} gid {gid} (not root): no privileges to drop{}",
                if bind {
                    ", holding CAP_NET_BIND_SERVICE (reloads may bind ports below 1024)"
                } else {
                    ""
                }
            );
        } else {
            tracing::warn!(
                "not running as root (uid {uid} gid {gid}): cannot switch to user {} group {}; \
                 carrying on as is",
                user.unwrap_or("-"),
                group.unwrap_or("-")
            );
        }
        return Ok(Outcome::AlreadyUnprivileged { uid, gid });
    }

    let gid = target_gid.unwrap_or_else(getgid);
    // Only this thread keeps its permitted capabilities through setuid (the flag is per
    // thread); `keep_bind_capability` then narrows them to the one it needs.
    let leaves_root = target_user.as_ref().is_some_and(|u| !u.uid.is_root());
    if leaves_root {
        nix::sys::prctl::set_keepcaps(true).context("prctl(PR_SET_KEEPCAPS)")?;
    }
    setgroups(&[gid]).context("setgroups")?;
    setgid(gid).with_context(|| format!("setgid({gid})"))?;
    if let Some(u) = &target_user {
        setuid(u.uid).with_context(|| format!("setuid({})", u.uid))?;
    }
    let kept = if leaves_root {
        keep_bind_capability(net_admin)?
    } else {
        false
    };
    let uid = geteuid();
    if let Some(u) = &target_user {
        if getuid() != u.uid || uid != u.uid || getegid() != gid {
            bail!("privilege drop did not take: uid {} gid {}", uid, getegid());
        }
        if setuid(Uid::from_raw(0)).is_ok() {
            bail!("privilege drop failed: setuid(0) still succeeds; refusing to run");
        }
    }
    tracing::info!(
        "dropped privileges: now uid {} ({}) gid {}{}",
        uid,
        target_user.as_ref().map_or("root", |u| u.name.as_str()),
        gid,
        match (kept, net_admin) {
            (true, false) => {
                ", keeping only CAP_NET_BIND_SERVICE (reloads may bind ports below 1024)"
            }
            (true, true) => {
                ", keeping only CAP_NET_BIND_SERVICE and CAP_NET_ADMIN (interception: \
                 IP_TRANSPARENT)"
            }
            (false, _) => "",
        }
    );
    Ok(Outcome::Dropped {
        uid: uid.as_raw(),
        gid: gid.as_raw(),
    })
}

/// After `setuid` with `PR_SET_KEEPCAPS`, this thread still holds root's permitted
/// capabilities (none effective). Narrows them to `CAP_NET_BIND_SERVICE`, effective, so that a
/// reload (run by threads started from this one, such as the reload thread) can bind a new
/// listener below port 1024, as under systemd with `AmbientCapabilities=CAP_NET_BIND_SERVICE`;
/// and inheritable and ambient, so that the process an upgrade starts (spawned by the control
/// thread, also started from this one) keeps it through `execve`. Threads started before the
/// drop had no such flag and kept nothing.
///
/// Returns whether the capability was kept. If narrowing fails, every capability is cleared
/// instead, and if even that fails, or anything but that one capability is left in any set, it
/// is an error: the relay must not run with root's capabilities in reach. If only the ambient
/// bit cannot be raised (a kernel before 4.3), the relay keeps the capability for itself and
/// warns that an upgrade will lose it.
///
/// `net_admin`: keep `CAP_NET_ADMIN` as well (routes that set `IP_TRANSPARENT`).
fn keep_bind_capability(net_admin: bool) -> anyhow::Result<bool> {
    use caps::{CapSet, Capability, CapsHashSet};

    let mut bind: CapsHashSet = [Capability::CAP_NET_BIND_SERVICE].into_iter().collect();
    if net_admin {
        bind.insert(Capability::CAP_NET_ADMIN);
    }
    let narrowed = caps::set(None, CapSet::Permitted, &bind)
        .and_then(|()| caps::set(None, CapSet::Effective, &bind))
        .and_then(|()| caps::set(None, CapSet::Inheritable, &bind));
    let kept = match narrowed {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                "cannot keep CAP_NET_BIND_SERVICE ({e}): reloads cannot bind ports below 1024"
            );
            // Effective and inheritable first: each must stay within permitted.
            caps::clear(None, CapSet::Effective)
                .and_then(|()| caps::clear(None, CapSet::Inheritable))
                .and_then(|()| caps::clear(None, CapSet::Permitted))
                .context("clearing capabilities")?;
            false
        }
    };
    for capability in &bind {
        if kept && let Err(e) = caps::raise(None, CapSet::Ambient, *capability) {
            tracing::warn!(
                "cannot make {capability} ambient ({e}): a process started by `spliceway \
                 upgrade` will not have it"
            );
            let _ = caps::clear(None, CapSet::Inheritable);
        }
    }
    let _ = nix::sys::prctl::set_keepcaps(false);
    for set in [CapSet::Permitted, CapSet::Inheritable, CapSet::Ambient] {
        let held = match caps::read(None, set) {
            Ok(held) => held,
            // A kernel without ambient capabilities has none to hold.
            Err(_) if matches!(set, CapSet::Ambient) => CapsHashSet::new(),
            Err(e) => return Err(e).context("reading capabilities"),
        };
        if !held.is_subset(&bind) {
            bail!("privilege drop failed: capabilities {held:?} remain ({set:?}); refusing to run");
        }
    }
    Ok(kept)
}
