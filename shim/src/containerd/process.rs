//! A container process (the init process or an exec) and its exit.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;

use super::io::Io;

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Frozen.
    Paused,
    /// Exited.
    Stopped,
}

/// The mutable part of a process.
#[derive(Debug)]
pub struct State {
    /// Its pid (0 before it exists).
    pub pid: i32,
    /// Its status.
    pub status: Status,
    /// Its exit status, once stopped.
    pub exit_status: u32,
    /// When it exited.
    pub exited_at: Option<Timestamp>,
}

/// A process the shim tracks.
pub struct Process {
    /// The exec id ("" for the init process).
    pub exec_id: String,
    /// containerd's stdio FIFO paths and whether it has a terminal.
    pub stdin: String,
    /// The stdout FIFO.
    pub stdout: String,
    /// The stderr FIFO.
    pub stderr: String,
    /// Whether the process has a pty.
    pub terminal: bool,
    /// For an exec, its OCI process (JSON).
    pub spec: Option<Vec<u8>>,
    /// Its stdio pumps, once set up.
    pub io: Mutex<Option<Io>>,
    state: Mutex<State>,
    exited: Condvar,
}

impl Process {
    /// A process not yet running.
    pub fn new(
        exec_id: &str,
        stdin: &str,
        stdout: &str,
        stderr: &str,
        terminal: bool,
        spec: Option<Vec<u8>>,
    ) -> Process {
        Process {
            exec_id: exec_id.to_string(),
            stdin: stdin.to_string(),
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
            terminal,
            spec,
            io: Mutex::new(None),
            state: Mutex::new(State {
                pid: 0,
                status: Status::Created,
                exit_status: 0,
                exited_at: None,
            }),
            exited: Condvar::new(),
        }
    }

    /// Its state, locked.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.state().pid
    }

    /// Record that it exited with `code`: waits (a while) for its output to be
    /// copied, then wakes [`Process::wait`].
    pub fn set_exited(&self, code: i32) {
        let io = self.io.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(io) = io {
            io.wait_output(Duration::from_secs(5));
        }
        let mut state = self.state();
        state.status = Status::Stopped;
        state.exit_status = u32::try_from(code).unwrap_or(255);
        state.exited_at = Some(now());
        self.exited.notify_all();
    }

    /// Block until it has exited; returns its exit status and time.
    pub fn wait(&self) -> (u32, Option<Timestamp>) {
        let mut state = self.state();
        while state.status != Status::Stopped {
            state = self.exited.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        (state.exit_status, state.exited_at.clone())
    }
}

/// The current time as a protobuf timestamp.
pub fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    ts.nanos = i32::try_from(since.subsec_nanos()).unwrap_or(0);
    ts
}
