//! `pause` and `resume`: the cgroup freezer (v1 freezer.state, v2 cgroup.freeze);
//! in vm mode the guest agent freezes the container's cgroup in the guest.

use std::path::PathBuf;

use super::cli::Global;
use super::container::{self, Record, RecordError, Status};

/// A container could not be frozen or thawed.
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("container {0:?} is not running")]
    NotRunning(String),
    #[error("container {0:?} is not paused")]
    NotPaused(String),
    #[error("the freezer cgroup controller is not available")]
    NoFreezer,
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Vm(#[from] super::vm::VmModeError),
}

fn set_frozen(global: &Global, id: &str, frozen: bool) -> Result<(), FreezeError> {
    let record = Record::load(global, id)?;
    let status = record.status(global);
    match (frozen, status) {
        (true, Status::Running) | (false, Status::Paused) => {}
        (true, _) => return Err(FreezeError::NotRunning(id.to_owned())),
        (false, _) => return Err(FreezeError::NotPaused(id.to_owned())),
    }
    if record.vm.is_some() {
        return Ok(super::vm::set_frozen(global, &record, frozen)?);
    }
    let cgroup = record.cgroup()?;
    let Some(file) = container::freezer_file(&cgroup) else {
        return Err(FreezeError::NoFreezer);
    };
    let value = match (file.ends_with("cgroup.freeze"), frozen) {
        (true, true) => "1",
        (true, false) => "0",
        (false, true) => "FROZEN",
        (false, false) => "THAWED",
    };
    std::fs::write(&file, value).map_err(|source| FreezeError::Write { path: file, source })
}

/// `berth-runtime pause`.
pub fn pause(global: &Global, id: &str) -> Result<(), FreezeError> {
    set_frozen(global, id, true)
}

/// `berth-runtime resume`.
pub fn resume(global: &Global, id: &str) -> Result<(), FreezeError> {
    set_frozen(global, id, false)
}
