//! The container record kept in `ROOT/ID/`: `state.json` (this record),
//! `config.json` (the spec as created) and, until `start`, `exec.fifo`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use berth_agent::cgroups::{Cgroup, CgroupError};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::cli::Global;

/// The FIFO the created process blocks on until `start`.
pub const EXEC_FIFO: &str = "exec.fifo";

/// What berth-runtime remembers about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The spec's ociVersion.
    pub oci_version: String,
    /// The container id.
    pub id: String,
    /// Host pid of the container's process.
    pub pid: i32,
    /// The process's start time (field 22 of /proc/PID/stat) to detect pid reuse.
    pub start_time: u64,
    /// The bundle's absolute path.
    pub bundle: PathBuf,
    /// The root filesystem's absolute path.
    pub rootfs: PathBuf,
    /// The spec's annotations.
    pub annotations: HashMap<String, String>,
    /// The cgroup path used (cgroupfs form).
    pub cgroups_path: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// vm mode: the container runs in a microVM (`pid` is the VMM's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<super::vm::VmRecord>,
}

/// A container record could not be found, read, written or acted on.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The id has characters runc would refuse.
    #[error("invalid container id {0:?}")]
    InvalidId(String),
    /// No record under ROOT/ID.
    #[error("container {0:?} does not exist")]
    NotFound(String),
    /// A file of the record could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file of the record is not valid JSON of its kind.
    #[error("corrupt {}", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The record could not be turned into JSON.
    #[error("cannot encode the state of {id}")]
    Encode {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    /// The record could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The written record could not be put in place.
    #[error("cannot write the state of {id}")]
    Replace {
        id: String,
        #[source]
        source: std::io::Error,
    },
    /// The container's cgroup could not be opened.
    #[error("cannot open the container's cgroup")]
    Cgroup(#[source] CgroupError),
    /// A signal could not be sent.
    #[error("cannot signal process {pid}")]
    Signal {
        pid: Pid,
        #[source]
        source: nix::errno::Errno,
    },
}

/// A container's status, as the runtime spec names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, waiting for `start`.
    Created,
    /// Started and alive.
    Running,
    /// Frozen.
    Paused,
    /// The process exited.
    Stopped,
}

impl Status {
    /// The spec's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// A container id runc would accept: no path separators, not `.`/`..`.
pub fn validate_id(id: &str) -> Result<(), RecordError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if !ok {
        return Err(RecordError::InvalidId(id.to_owned()));
    }
    Ok(())
}

/// `ROOT/ID`.
pub fn dir(global: &Global, id: &str) -> PathBuf {
    global.root.join(id)
}

impl Record {
    /// Load a container's record; a clear error when there is none.
    pub fn load(global: &Global, id: &str) -> Result<Record, RecordError> {
        validate_id(id)?;
        let path = dir(global, id).join("state.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RecordError::NotFound(id.to_owned()))
            }
            Err(source) => return Err(RecordError::Read { path, source }),
        };
        serde_json::from_str(&text).map_err(|source| RecordError::Corrupt { path, source })
    }

    /// Write the record atomically.
    pub fn save(&self, global: &Global) -> Result<(), RecordError> {
        let dir = dir(global, &self.id);
        let tmp = dir.join("state.json.tmp");
        let json = serde_json::to_vec_pretty(self).map_err(|source| RecordError::Encode {
            id: self.id.clone(),
            source,
        })?;
        if let Err(source) = std::fs::write(&tmp, json) {
            return Err(RecordError::Write { path: tmp, source });
        }
        std::fs::rename(&tmp, dir.join("state.json")).map_err(|source| RecordError::Replace {
            id: self.id.clone(),
            source,
        })
    }

    /// The spec saved at create time.
    pub fn spec(&self, global: &Global) -> Result<Spec, RecordError> {
        let path = dir(global, &self.id).join("config.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(source) => return Err(RecordError::Read { path, source }),
        };
        serde_json::from_str(&text).map_err(|source| RecordError::Corrupt { path, source })
    }

    /// The container's cgroup.
    pub fn cgroup(&self) -> Result<Cgroup, RecordError> {
        Cgroup::open(&self.cgroups_path).map_err(RecordError::Cgroup)
    }

    /// The status, derived from the process (alive, zombie, reused pid), the
    /// freezer and the exec FIFO.
    pub fn status(&self, global: &Global) -> Status {
        if self.vm.is_some() {
            return super::vm::status(global, self);
        }
        if !alive(self.pid, self.start_time) {
            return Status::Stopped;
        }
        if dir(global, &self.id).join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        if self.cgroup().map(|c| frozen(&c)).unwrap_or(false) {
            return Status::Paused;
        }
        Status::Running
    }

    /// The runtime-spec state object.
    pub fn state_json(&self, status: Status) -> serde_json::Value {
        let pid = if status == Status::Stopped {
            0
        } else {
            self.pid
        };
        serde_json::json!({
            "ociVersion": self.oci_version,
            "id": self.id,
            "status": status.as_str(),
            "pid": pid,
            "bundle": self.bundle,
            "annotations": self.annotations,
        })
    }
}

/// The state and start time fields of /proc/PID/stat.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 overall; `rest` starts at field 3.
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Whether `pid` is the same, not yet exited process.
pub fn alive(pid: i32, start_time: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    match proc_stat(pid) {
        Some((state, start)) => start == start_time && state != 'Z' && state != 'X',
        None => false,
    }
}

/// The freezer's control file: v1 `freezer/PATH/freezer.state`, v2 `PATH/cgroup.freeze`.
pub fn freezer_file(cgroup: &Cgroup) -> Option<PathBuf> {
    let dirs = cgroup.dirs();
    match cgroup.version() {
        berth_agent::cgroups::CgroupVersion::V2 => dirs.first().map(|d| d.join("cgroup.freeze")),
        berth_agent::cgroups::CgroupVersion::V1 => {
            let base = Path::new(berth_agent::cgroups::CGROUP_ROOT).join("freezer");
            dirs.into_iter()
                .find(|d| d.starts_with(&base))
                .map(|d| d.join("freezer.state"))
        }
    }
}

fn frozen(cgroup: &Cgroup) -> bool {
    let Some(file) = freezer_file(cgroup) else {
        return false;
    };
    match std::fs::read_to_string(file) {
        Ok(text) => {
            let text = text.trim();
            text == "FROZEN" || text == "1"
        }
        Err(_) => false,
    }
}

/// Send `signal` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: Pid, signal: nix::sys::signal::Signal) -> Result<(), RecordError> {
    match nix::sys::signal::kill(pid, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(source) => Err(RecordError::Signal { pid, source }),
    }
}
