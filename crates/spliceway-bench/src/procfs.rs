//! What `/proc` says about a process (RSS, descriptors) and about the machine's kernel memory
//! (slab, TCP buffer pages).

use std::fs;
use std::io;
use std::path::PathBuf;

/// A process to observe: `None` is this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc(pub Option<u32>);

/// A process's open descriptors, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fds {
    /// Sockets (listening and connected).
    pub sockets: usize,
    /// Pipe ends (two per pipe).
    pub pipes: usize,
    /// Everything else (epoll, eventfd, files, terminals).
    pub other: usize,
}

impl Fds {
    /// All descriptors.
    pub fn total(&self) -> usize {
        self.sockets + self.pipes + self.other
    }
}

/// Memory of a process, in KiB, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`) since start or since [`Proc::reset_peak`].
    pub peak_kib: u64,
}

impl Proc {
    /// This process.
    pub const SELF: Proc = Proc(None);

    fn dir(&self) -> PathBuf {
        match self.0 {
            Some(pid) => PathBuf::from(format!("/proc/{pid}")),
            None => PathBuf::from("/proc/self"),
        }
    }

    /// Resident and peak memory.
    pub fn memory(&self) -> io::Result<Memory> {
        let status = fs::read_to_string(self.dir().join("status"))?;
        Ok(Memory {
            rss_kib: field_kib(&status, "VmRSS:").unwrap_or(0),
            peak_kib: field_kib(&status, "VmHWM:").unwrap_or(0),
        })
    }

    /// Resets the peak RSS (`echo 5 > /proc/PID/clear_refs`); false if the kernel refused.
    pub fn reset_peak(&self) -> bool {
        fs::write(self.dir().join("clear_refs"), "5").is_ok()
    }

    /// Open descriptors by kind.
    pub fn fds(&self) -> io::Result<Fds> {
        let mut fds = Fds::default();
        for entry in fs::read_dir(self.dir().join("fd"))? {
            let Ok(entry) = entry else { continue };
            // A descriptor may close between the listing and the readlink: skip it.
            let Ok(target) = fs::read_link(entry.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            if target.starts_with("socket:") {
                fds.sockets += 1;
            } else if target.starts_with("pipe:") {
                fds.pipes += 1;
            } else {
                fds.other += 1;
            }
        }
        Ok(fds)
    }

    /// Whether the process still exists (and is not a zombie).
    pub fn is_alive(&self) -> bool {
        fs::read_to_string(self.dir().join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
    }
}

/// Kernel memory of the whole machine that connections use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelMemory {
    /// `Slab:` of `/proc/meminfo`, KiB.
    pub slab_kib: u64,
    /// `SUnreclaim:` of `/proc/meminfo`, KiB.
    pub sunreclaim_kib: u64,
    /// TCP `mem` of `/proc/net/sockstat`: pages of socket buffers.
    pub tcp_mem_pages: u64,
    /// TCP `inuse` of `/proc/net/sockstat`.
    pub tcp_inuse: u64,
    /// TCP `tw` of `/proc/net/sockstat` (TIME_WAIT).
    pub tcp_tw: u64,
}

impl KernelMemory {
    /// Reads `/proc/meminfo` and `/proc/net/sockstat`.
    pub fn read() -> io::Result<KernelMemory> {
        let meminfo = fs::read_to_string("/proc/meminfo")?;
        let sockstat = fs::read_to_string("/proc/net/sockstat")?;
        let tcp = sockstat
            .lines()
            .find(|l| l.starts_with("TCP:"))
            .unwrap_or_default();
        Ok(KernelMemory {
            slab_kib: field_kib(&meminfo, "Slab:").unwrap_or(0),
            sunreclaim_kib: field_kib(&meminfo, "SUnreclaim:").unwrap_or(0),
            tcp_mem_pages: sockstat_field(tcp, "mem").unwrap_or(0),
            tcp_inuse: sockstat_field(tcp, "inuse").unwrap_or(0),
            tcp_tw: sockstat_field(tcp, "tw").unwrap_or(0),
        })
    }
}

/// A `TcpExt` counter of `/proc/net/netstat` (e.g. `TCPAbortOnMemory`: sockets the kernel
/// killed for lack of TCP memory, `net.ipv4.tcp_mem`).
pub fn tcp_ext_counter(name: &str) -> Option<u64> {
    let text = fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?;
    let values = lines.next()?;
    let index = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(index)?.parse().ok()
}

/// `Name:   123 kB` -> 123.
fn field_kib(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// `TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1` -> the number after `name`.
fn sockstat_field(line: &str, name: &str) -> Option<u64> {
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if word == name {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// The system page size in bytes.
pub fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |n| n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_sockstat_lines() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(field_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(field_kib(status, "VmHWM:"), Some(2048));
        let tcp = "TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 13";
        assert_eq!(sockstat_field(tcp, "mem"), Some(13));
        assert_eq!(sockstat_field(tcp, "tw"), Some(2));
        assert_eq!(sockstat_field(tcp, "nope"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = Proc::SELF;
        assert!(me.memory().unwrap().rss_kib > 0);
        assert!(me.fds().unwrap().total() >= 3);
        assert!(me.is_alive());
        let k = KernelMemory::read().unwrap();
        assert!(tcp_ext_counter("TCPAbortOnMemory").is_some());
        assert!(k.slab_kib > 0);
    }
}
