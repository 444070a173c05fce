//! Reaps every child of the agent (it is PID 1 in the guest, or a child
//! subreaper in test mode) and hands the exit codes of registered pids to
//! whoever waits for them.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// A value set once that several threads may wait for.
#[derive(Debug)]
pub(crate) struct Once<T> {
    value: Mutex<Option<T>>,
    ready: Condvar,
}

impl<T: Clone> Once<T> {
    pub(crate) fn new() -> Once<T> {
        Once {
            value: Mutex::new(None),
            ready: Condvar::new(),
        }
    }

    /// Set the value unless it is already set.
    pub(crate) fn set(&self, value: T) {
        let mut slot = lock(&self.value);
        if slot.is_none() {
            *slot = Some(value);
            self.ready.notify_all();
        }
    }

    /// Block until the value is set.
    pub(crate) fn wait(&self) -> T {
        let mut slot = lock(&self.value);
        loop {
            if let Some(value) = slot.as_ref() {
                return value.clone();
            }
            slot = self
                .ready
                .wait(slot)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Lock, ignoring poisoning (the data stays consistent: every critical section
/// is a few plain assignments).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The exit code of a wait status: the code, or 128 + signal number.
pub(crate) fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// The registry of watched pids and the reaping thread.
#[derive(Debug, Default)]
pub(crate) struct Reaper {
    watched: Mutex<HashMap<Pid, Arc<Once<i32>>>>,
    /// Bumped whenever a child may have been created; wakes the reaper when it
    /// had no children.
    generation: Mutex<u64>,
    forked: Condvar,
}

impl Reaper {
    /// Start the reaping thread.
    pub(crate) fn start() -> std::io::Result<Arc<Reaper>> {
        let reaper = Arc::new(Reaper::default());
        let worker = Arc::clone(&reaper);
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || worker.run())?;
        Ok(reaper)
    }

    /// Tell the reaper a child now exists.
    pub(crate) fn forked(&self) {
        *lock(&self.generation) += 1;
        self.forked.notify_all();
    }

    /// Watch `pid` (which must not be reaped yet: it is a child of a process
    /// still alive, or of ours); its exit code lands in the returned cell.
    pub(crate) fn watch(&self, pid: Pid) -> Arc<Once<i32>> {
        let cell = Arc::new(Once::new());
        lock(&self.watched).insert(pid, Arc::clone(&cell));
        self.forked();
        cell
    }

    fn run(&self) {
        loop {
            let seen = *lock(&self.generation);
            match waitpid(Pid::from_raw(-1), None) {
                Ok(status) => {
                    if let (Some(pid), Some(code)) = (status.pid(), exit_code(status)) {
                        if let Some(cell) = lock(&self.watched).remove(&pid) {
                            cell.set(code);
                        }
                    }
                }
                Err(Errno::EINTR) => {}
                Err(_) => {
                    // No children: sleep until one may exist (orphans only ever
                    // come from our own descendants), re-checking now and then.
                    let generation = lock(&self.generation);
                    let _ = self
                        .forked
                        .wait_timeout_while(generation, Duration::from_secs(1), |g| *g == seen)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }
}
