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
//! After a drop, a reload cannot bind new ports below 1024 (the capability went with root).

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

/// Switches to `user` and `group` (names or numeric ids) if running as root.
///
/// # Errors
///
/// An unknown user or group is a configuration error (exit status 78); a failed switch, or
/// one after which `setuid(0)` still succeeds, is a plain error: the relay must not run.
pub fn drop_to(user: Option<&str>, group: Option<&str>) -> anyhow::Result<Outcome> {
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
            tracing::info!(
                "already running as uid {uid} gid {gid} (not root): no privileges to drop"
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
    setgroups(&[gid]).context("setgroups")?;
    setgid(gid).with_context(|| format!("setgid({gid})"))?;
    if let Some(u) = &target_user {
        setuid(u.uid).with_context(|| format!("setuid({})", u.uid))?;
    }
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
        "dropped privileges: now uid {} ({}) gid {}",
        uid,
        target_user.as_ref().map_or("root", |u| u.name.as_str()),
        gid
    );
    Ok(Outcome::Dropped {
        uid: uid.as_raw(),
        gid: gid.as_raw(),
    })
}
