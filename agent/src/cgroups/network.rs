//! `linux.resources.network`: a class id for the container's packets (v1
//! `net_cls.classid`) and per-interface priorities (v1 `net_prio.ifpriomap`).
//!
//! cgroup v2 has neither controller. runc ignores the settings there; berth
//! refuses them, because the user asked for traffic classes or priorities that
//! nothing would apply (v2 classifies sockets by cgroup path instead).

use std::path::Path;

use oci_spec::runtime::{LinuxInterfacePriority, LinuxNetwork};

use super::{append_line, require, write_file, CgroupError, Result};

const CLASS_ID: &str = "linux.resources.network.classID";
const PRIORITIES: &str = "linux.resources.network.priorities";

/// The class id, when set (0 means unset, as in runc).
fn class_id(network: &LinuxNetwork) -> Option<u32> {
    network.class_id().filter(|c| *c != 0)
}

fn priorities(network: &LinuxNetwork) -> &[LinuxInterfacePriority] {
    network.priorities().as_deref().unwrap_or_default()
}

/// The v1 controllers the spec needs, with the setting that needs each.
pub(super) fn v1_controllers(network: &LinuxNetwork) -> Vec<(&'static str, &'static str)> {
    let mut needed = Vec::new();
    if class_id(network).is_some() {
        needed.push(("net_cls", CLASS_ID));
    }
    if !priorities(network).is_empty() {
        needed.push(("net_prio", PRIORITIES));
    }
    needed
}

/// Checks that need no cgroup: interface names that fit `ifpriomap`'s lines,
/// and no setting at all on v2.
pub(super) fn validate(network: &LinuxNetwork, v2: bool) -> Result<()> {
    if v2 {
        if let Some((_, setting)) = v1_controllers(network).first() {
            return Err(CgroupError::Unsupported {
                setting,
                reason: "cgroup v2 has no net_cls or net_prio controller".to_owned(),
            });
        }
    }
    for priority in priorities(network) {
        let name = priority.name();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(CgroupError::Invalid {
                setting: PRIORITIES,
                reason: format!("{name:?} is not an interface name"),
            });
        }
    }
    Ok(())
}

/// Apply under the v1 hierarchies at `root` to the cgroup `path`.
pub(super) fn apply_v1(root: &Path, path: &Path, network: &LinuxNetwork) -> Result<()> {
    if let Some(class_id) = class_id(network) {
        let dir = root.join("net_cls").join(path);
        let file = require(&dir, "net_cls.classid", CLASS_ID)?;
        write_file(&file, &class_id.to_string())?;
    }
    if !priorities(network).is_empty() {
        let dir = root.join("net_prio").join(path);
        let file = require(&dir, "net_prio.ifpriomap", PRIORITIES)?;
        for priority in priorities(network) {
            append_line(
                &file,
                &format!("{} {}", priority.name(), priority.priority()),
            )?;
        }
    }
    Ok(())
}
