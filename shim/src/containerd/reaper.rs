//! Exits to processes: the crate's SIGCHLD handler reaps every child (the shim
//! is a child subreaper, so the container's processes are its children once
//! berth-runtime has exited) and reports `(pid, status)`; an exit seen before
//! its process's pid is known is kept until it is.

use std::collections::HashMap;
use std::sync::Arc;

use containerd_shim::monitor::{monitor_subscribe, Subject, Topic};
use containerd_shim::protos::events::task::TaskExit;

use super::process::{Process, Status};
use super::service::Inner;

/// Exits not matched to a process yet, and the pids being watched.
#[derive(Default)]
pub struct Exits {
    unmatched: HashMap<i32, i32>,
    watched: HashMap<i32, Arc<Process>>,
}

/// The exit monitor could not be subscribed to.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch for exits")]
pub struct WatchError(#[source] containerd_shim::Error);

/// Start the thread that turns exits into [`Process::set_exited`] and TaskExit.
pub fn start(inner: Arc<Inner>) -> Result<(), WatchError> {
    let subscription = monitor_subscribe(Topic::Pid).map_err(WatchError)?;
    std::thread::spawn(move || {
        while let Ok(event) = subscription.rx.recv() {
            let Subject::Pid(pid) = event.subject else {
                continue;
            };
            let process = {
                let mut exits = inner.exits.lock().unwrap_or_else(|e| e.into_inner());
                match exits.watched.remove(&pid) {
                    Some(process) => Some(process),
                    None => {
                        if exits.unmatched.len() > 4096 {
                            exits.unmatched.clear();
                        }
                        exits.unmatched.insert(pid, event.exit_code);
                        None
                    }
                }
            };
            if let Some(process) = process {
                let inner = inner.clone();
                std::thread::spawn(move || exited(&inner, &process, pid, event.exit_code));
            }
        }
    });
    Ok(())
}

/// Give `process` its pid and watch for its exit (which may have happened).
pub fn watch(inner: &Arc<Inner>, process: &Arc<Process>, pid: i32) {
    let early = {
        let mut exits = inner.exits.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut state = process.state();
            state.pid = pid;
            if state.status == Status::Created && !process.exec_id.is_empty() {
                state.status = Status::Running;
            }
        }
        match exits.unmatched.remove(&pid) {
            Some(code) => Some(code),
            None => {
                exits.watched.insert(pid, process.clone());
                None
            }
        }
    };
    if let Some(code) = early {
        let inner = inner.clone();
        let process = process.clone();
        std::thread::spawn(move || exited(&inner, &process, pid, code));
    }
}

/// Forget a pid (its process was deleted).
pub fn unwatch(inner: &Inner, pid: i32) {
    let mut exits = inner.exits.lock().unwrap_or_else(|e| e.into_inner());
    exits.watched.remove(&pid);
}

fn exited(inner: &Inner, process: &Process, pid: i32, code: i32) {
    process.set_exited(code);
    let (exit_status, exited_at) = process.wait();
    let id = if process.exec_id.is_empty() {
        inner.id.clone()
    } else {
        process.exec_id.clone()
    };
    inner.publisher.publish(TaskExit {
        container_id: inner.id.clone(),
        id,
        pid: u32::try_from(pid).unwrap_or(0),
        exit_status,
        exited_at: exited_at.into(),
        ..Default::default()
    });
}
