//! What the agent reads from and does to a running container's cgroup: usage
//! statistics, the freezer (pause/resume), the process list and new limits.
//!
//! Everything goes through a [`Cgroup`], so the file-level behaviour is tested
//! against a temporary directory standing in for `/sys/fs/cgroup`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use crate::cgroups::{Cgroup, CgroupError, CgroupVersion};
use crate::protocol::{ProcessInfo, ResponseBody};

/// How long a freeze may take before it is undone and reported.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// A failure reading or changing a container's cgroup.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The cgroup could not be opened.
    #[error("failed to open cgroup {cgroup}")]
    Open {
        /// The cgroups path.
        cgroup: String,
        /// What went wrong.
        #[source]
        source: CgroupError,
    },
    /// A statistics file is missing or unreadable.
    #[error("failed to read {file} of cgroup {cgroup}")]
    Stat {
        /// The file.
        file: &'static str,
        /// The cgroups path.
        cgroup: String,
    },
    /// The cgroup has no freezer (v1 without the freezer controller).
    #[error("cgroup {cgroup} has no freezer")]
    NoFreezer {
        /// The cgroups path.
        cgroup: String,
    },
    /// A control file could not be written or read.
    #[error("failed to {op} {}", path.display())]
    Io {
        /// What was done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The processes did not all stop in time; the cgroup was thawed again.
    #[error("cgroup {cgroup} did not freeze within {}s", FREEZE_TIMEOUT.as_secs())]
    FreezeTimeout {
        /// The cgroups path.
        cgroup: String,
    },
    /// New limits could not be applied.
    #[error("failed to update cgroup {cgroup}")]
    Update {
        /// The cgroups path.
        cgroup: String,
        /// What went wrong.
        #[source]
        source: CgroupError,
    },
    /// The process list could not be read.
    #[error("failed to list the processes of cgroup {cgroup}")]
    Pids {
        /// The cgroups path.
        cgroup: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// The container's cgroup under `/sys/fs/cgroup`.
pub(super) fn open(cgroups_path: &str) -> Result<Cgroup, ResourceError> {
    Cgroup::open(cgroups_path).map_err(|source| ResourceError::Open {
        cgroup: cgroups_path.to_owned(),
        source,
    })
}

fn name(cgroup: &Cgroup) -> String {
    cgroup
        .dirs()
        .first()
        .map(|d| d.display().to_string())
        .unwrap_or_default()
}

/// Usage and limits of the cgroup.
pub(super) fn stats(cgroup: &Cgroup) -> Result<ResponseBody, ResourceError> {
    let dirs = cgroup.dirs();
    // The first of `names` found in any of the cgroup's directories.
    let read = |names: &[&'static str]| -> Option<String> {
        names.iter().find_map(|name| {
            dirs.iter()
                .find_map(|d| std::fs::read_to_string(d.join(name)).ok())
        })
    };
    let number = |text: Option<String>| text.and_then(|t| t.trim().parse::<u64>().ok());
    let missing = |file| ResourceError::Stat {
        file,
        cgroup: name(cgroup),
    };
    let memory_bytes = number(read(&["memory.current", "memory.usage_in_bytes"]))
        .ok_or_else(|| missing("memory.current"))?;
    let pids = number(read(&["pids.current"]))
        .unwrap_or_else(|| cgroup.pids().map(|p| p.len() as u64).unwrap_or_default());
    let cpu_usage_ns = match read(&["cpu.stat"]).and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("usage_usec ").map(str::to_owned))
    }) {
        Some(usec) => number(Some(usec)).map(|u| u.saturating_mul(1000)),
        None => number(read(&["cpuacct.usage"])),
    }
    .ok_or_else(|| missing("cpu.stat"))?;
    Ok(ResponseBody::Stats {
        memory_bytes,
        pids,
        cpu_usage_ns,
        memory_limit_bytes: read(&["memory.max", "memory.limit_in_bytes"])
            .as_deref()
            .and_then(limit),
        pids_limit: read(&["pids.max"]).as_deref().and_then(limit),
    })
}

/// A limit file's value; `None` for `max` and v1's "unlimited" (close to `i64::MAX`).
fn limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value < (1 << 62)).then_some(value)
}

/// The freezer's control file and the values that freeze and thaw.
struct Freezer {
    control: PathBuf,
    frozen: &'static str,
    thawed: &'static str,
    /// Where to read whether the freeze is complete.
    state: PathBuf,
}

fn freezer(cgroup: &Cgroup) -> Result<Freezer, ResourceError> {
    let dirs = cgroup.dirs();
    let found = match cgroup.version() {
        CgroupVersion::V2 => dirs.first().map(|d| Freezer {
            control: d.join("cgroup.freeze"),
            frozen: "1",
            thawed: "0",
            state: d.join("cgroup.events"),
        }),
        CgroupVersion::V1 => dirs
            .iter()
            .map(|d| d.join("freezer.state"))
            .find(|f| f.exists())
            .map(|f| Freezer {
                control: f.clone(),
                frozen: "FROZEN",
                thawed: "THAWED",
                state: f,
            }),
    };
    found.ok_or_else(|| ResourceError::NoFreezer {
        cgroup: name(cgroup),
    })
}

fn write(path: &Path, value: &str) -> Result<(), ResourceError> {
    std::fs::write(path, value).map_err(|source| ResourceError::Io {
        op: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// Whether every process of the cgroup is frozen.
pub(super) fn is_frozen(cgroup: &Cgroup) -> bool {
    let Ok(freezer) = freezer(cgroup) else {
        return false;
    };
    let text = std::fs::read_to_string(&freezer.state).unwrap_or_default();
    match cgroup.version() {
        CgroupVersion::V2 => text.lines().any(|l| l.trim() == "frozen 1"),
        CgroupVersion::V1 => text.trim() == "FROZEN",
    }
}

/// Freeze (`true`) or thaw the cgroup; a freeze returns once every process
/// stopped, and is undone if that takes longer than [`FREEZE_TIMEOUT`].
pub(super) fn set_frozen(cgroup: &Cgroup, frozen: bool) -> Result<(), ResourceError> {
    let freezer = freezer(cgroup)?;
    if !frozen {
        return write(&freezer.control, freezer.thawed);
    }
    write(&freezer.control, freezer.frozen)?;
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    while !is_frozen(cgroup) {
        if Instant::now() >= deadline {
            let _ = write(&freezer.control, freezer.thawed);
            return Err(ResourceError::FreezeTimeout {
                cgroup: name(cgroup),
            });
        }
        if cgroup.version() == CgroupVersion::V1 {
            // v1 may stay FREEZING until asked again.
            let _ = write(&freezer.control, freezer.frozen);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Apply `resources` to the cgroup (what they leave out is not changed).
pub(super) fn update(cgroup: &Cgroup, resources: &LinuxResources) -> Result<(), ResourceError> {
    cgroup
        .create(Some(resources))
        .map_err(|source| ResourceError::Update {
            cgroup: name(cgroup),
            source,
        })
}

/// The pids in the cgroup and its sub-cgroups (the first controller's tree on v1).
pub(super) fn pids(cgroup: &Cgroup) -> Result<Vec<i32>, ResourceError> {
    let mut pids = Vec::new();
    if let Some(dir) = cgroup.dirs().first() {
        collect_pids(dir, &mut pids).map_err(|source| ResourceError::Pids {
            cgroup: name(cgroup),
            source,
        })?;
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

fn collect_pids(dir: &Path, pids: &mut Vec<i32>) -> std::io::Result<()> {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            collect_pids(&entry.path(), pids)?;
        }
    }
    Ok(())
}

/// Where process facts are read: `/proc`, its boot time and clock tick (the
/// agent lists a container's processes with it; berth-runtime `ps` on the host too).
pub struct ProcTable {
    root: PathBuf,
    boot_time: u64,
    ticks_per_second: u64,
}

impl ProcTable {
    /// The running system's `/proc`.
    pub fn system() -> ProcTable {
        ProcTable::at(Path::new("/proc"))
    }

    /// A `/proc` at `root` (for tests).
    pub fn at(root: &Path) -> ProcTable {
        let boot_time = std::fs::read_to_string(root.join("stat"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
            })
            .unwrap_or(0);
        let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|t| u64::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(100);
        ProcTable {
            root: root.to_path_buf(),
            boot_time,
            ticks_per_second,
        }
    }

    /// The pids whose parent is `pid`.
    pub fn children(&self, pid: i32) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut children: Vec<i32> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|child| {
                std::fs::read_to_string(self.root.join(child.to_string()).join("stat"))
                    .ok()
                    .and_then(|stat| {
                        let rest = stat.get(stat.rfind(')')? + 1..)?.to_owned();
                        rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                    })
                    == Some(pid)
            })
            .collect();
        children.sort_unstable();
        children
    }

    /// What `ps -ef` shows of `pid`; `None` once it is gone.
    pub fn process(&self, pid: i32) -> Option<ProcessInfo> {
        let dir = self.root.join(pid.to_string());
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // The command name may hold spaces and parentheses.
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat.get(open + 1..close)?;
        // `rest` starts at field 3 (state).
        let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
        let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let ppid = rest.get(1).and_then(|v| v.parse().ok())?;
        let tty_nr = field(7).unwrap_or(0);
        let cpu_ticks = field(14).unwrap_or(0) + field(15).unwrap_or(0);
        let start_ticks = field(22).unwrap_or(0);
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| {
                l.strip_prefix("Uid:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let cmd = if args.is_empty() {
            format!("[{comm}]")
        } else {
            args.join(" ")
        };
        Some(ProcessInfo {
            pid,
            ppid,
            uid,
            user: user_name(&dir.join("root/etc/passwd"), uid),
            start_time: self.boot_time + start_ticks / self.ticks_per_second,
            cpu_time_ms: cpu_ticks * 1000 / self.ticks_per_second,
            tty: tty_name(tty_nr),
            cmd,
        })
    }
}

/// The name of `uid` in a passwd file.
fn user_name(passwd: &Path, uid: u32) -> Option<String> {
    let text = std::fs::read_to_string(passwd).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// `pts/N`, `ttyN` or `ttySN` for a stat `tty_nr`; `None` without a terminal.
fn tty_name(tty_nr: u64) -> Option<String> {
    if tty_nr == 0 {
        return None;
    }
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    Some(match major {
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        _ => format!("{major}:{minor}"),
    })
}

/// The processes of the cgroup, skipping those that exit meanwhile.
pub(super) fn processes(cgroup: &Cgroup, table: &ProcTable) -> Result<ResponseBody, ResourceError> {
    let processes = pids(cgroup)?
        .into_iter()
        .filter_map(|pid| table.process(pid))
        .collect();
    Ok(ResponseBody::Processes { processes })
}

#[cfg(test)]
#[path = "resources_tests.rs"]
mod tests;
