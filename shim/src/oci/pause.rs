//! `pause` and `resume`: the cgroup freezer (v1 freezer.state, v2 cgroup.freeze).

use anyhow::{bail, Context, Result};

use super::cli::Global;
use super::container::{self, Record, Status};

fn set_frozen(global: &Global, id: &str, frozen: bool) -> Result<()> {
    let record = Record::load(global, id)?;
    let status = record.status(global);
    match (frozen, status) {
        (true, Status::Running) | (false, Status::Paused) => {}
        (true, _) => bail!("container {id:?} is not running"),
        (false, _) => bail!("container {id:?} is not paused"),
    }
    let cgroup = record.cgroup()?;
    let Some(file) = container::freezer_file(&cgroup) else {
        bail!("the freezer cgroup controller is not available");
    };
    let value = match (file.ends_with("cgroup.freeze"), frozen) {
        (true, true) => "1",
        (true, false) => "0",
        (false, true) => "FROZEN",
        (false, false) => "THAWED",
    };
    std::fs::write(&file, value).with_context(|| format!("cannot write {}", file.display()))
}

/// `berth-runtime pause`.
pub fn pause(global: &Global, id: &str) -> Result<()> {
    set_frozen(global, id, true)
}

/// `berth-runtime resume`.
pub fn resume(global: &Global, id: &str) -> Result<()> {
    set_frozen(global, id, false)
}
