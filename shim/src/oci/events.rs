//! `events`: resource usage from the container's cgroup, as runc's stats events
//! (in vm mode, from the guest agent).

use std::path::Path;
use std::time::Duration;

use berth_agent::cgroups::{CgroupVersion, CGROUP_ROOT};

use super::cli::{EventsArgs, Global};
use super::container::{Record, RecordError, Status};
use super::CommandError;

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_limit(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    if text == "max" {
        return Some(u64::MAX);
    }
    text.parse().ok()
}

/// One stats event: memory usage/limit, pids current/limit, cpu usage (ns).
pub fn stats(record: &Record) -> Result<serde_json::Value, RecordError> {
    let cgroup = record.cgroup()?;
    let rel = record.cgroups_path.trim_start_matches('/');
    let root = Path::new(CGROUP_ROOT);
    let (mem_usage, mem_limit, pids_cur, pids_max, cpu_total) = match cgroup.version() {
        CgroupVersion::V1 => {
            let mem = root.join("memory").join(rel);
            let pids = root.join("pids").join(rel);
            let cpu = root.join("cpuacct").join(rel);
            (
                read_u64(&mem.join("memory.usage_in_bytes")),
                read_u64(&mem.join("memory.limit_in_bytes")),
                read_u64(&pids.join("pids.current")),
                read_limit(&pids.join("pids.max")),
                read_u64(&cpu.join("cpuacct.usage")),
            )
        }
        CgroupVersion::V2 => {
            let dir = root.join(rel);
            let cpu = std::fs::read_to_string(dir.join("cpu.stat"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
                })
                .map(|us| us * 1000);
            (
                read_u64(&dir.join("memory.current")),
                read_limit(&dir.join("memory.max")),
                read_u64(&dir.join("pids.current")),
                read_limit(&dir.join("pids.max")),
                cpu,
            )
        }
    };
    Ok(serde_json::json!({
        "type": "stats",
        "id": record.id,
        "data": {
            "cpu": {"usage": {"total": cpu_total.unwrap_or(0)}},
            "memory": {"usage": {"usage": mem_usage.unwrap_or(0), "limit": mem_limit.unwrap_or(0)}},
            "pids": {"current": pids_cur.unwrap_or(0), "limit": pids_max.unwrap_or(0)},
        }
    }))
}

/// One stats event of a vm container, from the guest (unlimited is `u64::MAX`,
/// as `max` is read in [`stats`]).
pub fn vm_stats(global: &Global, record: &Record) -> Result<serde_json::Value, CommandError> {
    let usage = super::vm::usage(global, record)?;
    Ok(serde_json::json!({
        "type": "stats",
        "id": record.id,
        "data": {
            "cpu": {"usage": {"total": usage.cpu_usage_ns}},
            "memory": {"usage": {
                "usage": usage.memory_bytes,
                "limit": usage.memory_limit_bytes.unwrap_or(u64::MAX),
            }},
            "pids": {"current": usage.pids, "limit": usage.pids_limit.unwrap_or(u64::MAX)},
        }
    }))
}

/// `berth-runtime events`.
pub fn events(global: &Global, args: &EventsArgs) -> Result<(), CommandError> {
    let record = Record::load(global, &args.id)?;
    if record.status(global) == Status::Stopped {
        return Err(CommandError::NotRunning(args.id.clone()));
    }
    loop {
        let event = match record.vm {
            Some(_) => vm_stats(global, &record)?,
            None => stats(&record)?,
        };
        println!("{event}");
        if args.stats {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(args.interval.max(1)));
        if record.status(global) == Status::Stopped {
            return Ok(());
        }
    }
}
