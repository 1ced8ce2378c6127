//! `--relay-cpu F`: caps a relay process to fraction F of one core with the CFS bandwidth
//! controller, to play a small burstable instance (a t2.micro's baseline is 10% of a vCPU).
//!
//! cgroup v1 (the cpu controller mounted at /sys/fs/cgroup/cpu): a child directory with
//! `cpu.cfs_period_us` = 100000 and `cpu.cfs_quota_us` = F x 100000. cgroup v2 (a cgroup2
//! mount at /sys/fs/cgroup or /sys/fs/cgroup/unified whose `cgroup.controllers` lists cpu):
//! `+cpu` in the root's `cgroup.subtree_control`, then `cpu.max` = "QUOTA 100000" in a child.
//! The process is moved with `cgroup.procs` (all its threads; children it forks later follow).
//! Directories are named `swb<pid>-<path>` and removed on drop or by the signal handler (this
//! module's [`remove_dir`], registered with the [`Cleanup`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::cleanup::{Cleanup, prefix};

/// The CFS period used for every cap.
pub(crate) const PERIOD_US: u64 = 100_000;

const V1_ROOT: &str = "/sys/fs/cgroup/cpu";
const V2_ROOTS: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];

/// Which cgroup interface carries the cpu controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
}

/// The hierarchy the caps are created in.
#[derive(Debug, Clone)]
pub(crate) struct CgroupRoot {
    pub(crate) dir: PathBuf,
    pub(crate) version: Version,
}

/// One capped cgroup; removed on drop.
#[derive(Debug)]
pub(crate) struct CpuCgroup {
    dir: PathBuf,
    cleanup: Arc<Cleanup>,
}

impl CgroupRoot {
    /// Finds a hierarchy with the cpu controller (v1 first, as on this project's machines).
    pub(crate) fn detect() -> anyhow::Result<CgroupRoot> {
        let v1 = Path::new(V1_ROOT);
        if v1.join("cpu.cfs_quota_us").is_file() {
            return Ok(CgroupRoot {
                dir: v1.to_owned(),
                version: Version::V1,
            });
        }
        for root in V2_ROOTS {
            let root = Path::new(root);
            let controllers =
                fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            if controllers.split_whitespace().any(|c| c == "cpu") {
                return Ok(CgroupRoot {
                    dir: root.to_owned(),
                    version: Version::V2,
                });
            }
        }
        bail!(
            "--relay-cpu: no cgroup hierarchy with the cpu controller (looked for {V1_ROOT} \
             and a cgroup2 mount at {} listing cpu in cgroup.controllers)",
            V2_ROOTS.join(" or ")
        )
    }

    /// Creates `swb<pid>-<name>` capped at `fraction` of one core.
    pub(crate) fn create(
        &self,
        name: &str,
        fraction: f64,
        cleanup: &Arc<Cleanup>,
    ) -> anyhow::Result<CpuCgroup> {
        let quota_us = (fraction * PERIOD_US as f64).round() as u64;
        let dir = self.dir.join(format!("{}{name}", prefix()));
        let removed = dir.clone();
        cleanup.track(dir.display().to_string(), move || remove_dir(&removed));
        let group = CpuCgroup {
            dir: dir.clone(),
            cleanup: Arc::clone(cleanup),
        };
        if self.version == Version::V2 {
            let control = self.dir.join("cgroup.subtree_control");
            let enabled = fs::read_to_string(&control).unwrap_or_default();
            if !enabled.split_whitespace().any(|c| c == "cpu") {
                write(&control, "+cpu")?;
            }
        }
        fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        match self.version {
            Version::V1 => {
                write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &quota_us.to_string())?;
            }
            Version::V2 => write(&dir.join("cpu.max"), &format!("{quota_us} {PERIOD_US}"))?,
        }
        Ok(group)
    }

    /// Removes directories left by an earlier crashed run with this same PID.
    pub(crate) fn remove_leftovers(&self) {
        let prefix = prefix();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                remove_dir(&entry.path());
            }
        }
    }
}

impl CpuCgroup {
    /// Moves a process (all its threads) into the cgroup.
    pub(crate) fn add(&self, pid: i32) -> anyhow::Result<()> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }
}

impl Drop for CpuCgroup {
    fn drop(&mut self) {
        self.cleanup.remove(&self.dir.display().to_string());
    }
}

/// Removes a cgroup directory, first moving any process still in it to the parent.
fn remove_dir(dir: &Path) {
    for _ in 0..50 {
        if !dir.exists() || fs::remove_dir(dir).is_ok() {
            return;
        }
        if let (Ok(procs), Some(parent)) =
            (fs::read_to_string(dir.join("cgroup.procs")), dir.parent())
        {
            for pid in procs.split_whitespace() {
                let _ = fs::write(parent.join("cgroup.procs"), pid);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::warn!("could not remove cgroup {}", dir.display());
}

fn write(path: &Path, value: &str) -> anyhow::Result<()> {
    fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}
