//! What is happening to a container now, and how to notice a process that died behind our back.

use serde::{Deserialize, Serialize};

/// Docker's container states (the ones berth has).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }
}

/// The live state, rewritten on every transition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerState {
    pub status: Status,
    /// Host pid of the container's PID 1 while it runs.
    pub pid: Option<i32>,
    /// Start time of `pid` (field 22 of /proc/PID/stat), to tell a reused pid apart.
    pub pid_start_time: Option<u64>,
    /// The berth process supervising the container.
    pub monitor_pid: Option<i32>,
    /// Start time of `monitor_pid`, to tell a reused pid apart.
    #[serde(default)]
    pub monitor_start_time: Option<u64>,
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Why the container could not start or how it was lost.
    pub error: Option<String>,
}

impl ContainerState {
    pub fn created() -> ContainerState {
        ContainerState {
            status: Status::Created,
            pid: None,
            pid_start_time: None,
            monitor_pid: None,
            monitor_start_time: None,
            exit_code: None,
            oom_killed: false,
            started_at: None,
            finished_at: None,
            error: None,
        }
    }

    /// Whether the recorded PID 1 is still alive (not gone, not a zombie, not a reused pid).
    pub fn process_alive(&self) -> bool {
        match (self.pid, self.pid_start_time) {
            (Some(pid), Some(start)) => process_start_time(pid) == Some(start),
            _ => false,
        }
    }

    /// Whether the berth process supervising the container is still there to record its exit.
    pub fn monitor_alive(&self) -> bool {
        match (self.monitor_pid, self.monitor_start_time) {
            (Some(pid), Some(start)) => process_start_time(pid) == Some(start),
            _ => false,
        }
    }

    /// A running container whose process and monitor are both gone: nobody will record its end.
    pub fn is_lost(&self) -> bool {
        self.status == Status::Running && !self.process_alive() && !self.monitor_alive()
    }
}

/// The start time of a live, non-zombie process; None when it is gone or a zombie.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: read after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); start time is field 22.
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_process_is_lost_only_once_its_monitor_is_gone_too() {
        let me = std::process::id() as i32;
        let dead_process = ContainerState {
            status: Status::Running,
            pid: Some(i32::MAX - 1),
            pid_start_time: Some(1),
            ..ContainerState::created()
        };
        let watched = ContainerState {
            monitor_pid: Some(me),
            monitor_start_time: process_start_time(me),
            ..dead_process.clone()
        };
        assert!(!watched.is_lost(), "the live monitor will record the exit");
        let orphaned = ContainerState {
            monitor_pid: Some(me),
            monitor_start_time: process_start_time(me).map(|t| t + 1),
            ..dead_process.clone()
        };
        assert!(orphaned.is_lost(), "a reused monitor pid does not count");
        assert!(dead_process.is_lost());
    }

    #[test]
    fn start_time_is_field_22() {
        let stat = "123 (a b) c) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start_time(stat), Some(98765));
    }

    #[test]
    fn zombies_count_as_dead() {
        let stat = "123 (sh) Z 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 0 0";
        assert_eq!(parse_start_time(stat), None);
    }

    #[test]
    fn our_own_process_is_alive() {
        let me = std::process::id() as i32;
        let start = process_start_time(me);
        assert!(start.is_some());
        let state = ContainerState {
            pid: Some(me),
            pid_start_time: start,
            ..ContainerState::created()
        };
        assert!(state.process_alive());
        let reused = ContainerState {
            pid: Some(me),
            pid_start_time: start.map(|s| s + 1),
            ..ContainerState::created()
        };
        assert!(!reused.process_alive());
    }
}
