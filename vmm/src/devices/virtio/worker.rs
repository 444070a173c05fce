//! The worker thread of a virtio device: it owns the device's engine while the device is active,
//! and hands it back when stopped.

use std::thread::JoinHandle;

use tracing::warn;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::ActivateError;
use crate::seccomp::ThreadKind;

/// A device's engine `E`: kept here while the device is inactive, moved onto a (confined) worker
/// thread while it is active, and taken back when the worker is stopped.
#[derive(Debug)]
pub(crate) struct DeviceWorker<E> {
    /// The device name for log messages (`virtio-blk`).
    name: &'static str,
    /// What is lost when the worker thread panics (`drive`).
    what: &'static str,
    /// The engine while inactive; it lives on the worker thread while active.
    engine: Option<E>,
    /// The running worker and its kill eventfd.
    running: Option<(JoinHandle<E>, EventFd)>,
}

impl<E: Send + 'static> DeviceWorker<E> {
    /// An inactive worker holding `engine`; log messages name the device `name` and, when the
    /// worker panics, report `what` as gone.
    pub(crate) fn new(name: &'static str, what: &'static str, engine: E) -> Self {
        Self {
            name,
            what,
            engine: Some(engine),
            running: None,
        }
    }

    /// Takes the engine, builds the worker state with `make(engine, kill_evt)` and starts thread
    /// `thread_name` confined to `kind` running `run` (see [`spawn_worker`]). If the thread
    /// cannot be confined, the engine comes back through `give_back`.
    pub(crate) fn start<W: Send + 'static>(
        &mut self,
        thread_name: String,
        kind: ThreadKind,
        make: impl FnOnce(E, EventFd) -> W,
        run: fn(W) -> E,
        give_back: fn(W) -> E,
    ) -> Result<(), ActivateError> {
        let engine = self.engine.take().ok_or(ActivateError::AlreadyActive)?;
        let kill = EventFd::new(EFD_NONBLOCK).map_err(ActivateError::EventFd)?;
        let kill_worker = kill.try_clone().map_err(ActivateError::EventFd)?;
        let worker = make(engine, kill_worker);
        match spawn_worker(thread_name, kind, worker, run, give_back) {
            Ok(handle) => {
                self.running = Some((handle, kill));
                Ok(())
            }
            Err((e, back)) => {
                self.engine = back;
                Err(e)
            }
        }
    }

    /// Signals the worker to stop, joins it and takes the engine back. Does nothing while
    /// inactive.
    pub(crate) fn stop(&mut self) {
        if let Some((handle, kill)) = self.running.take() {
            if let Err(e) = kill.write(1) {
                warn!(error = %e, "{}: could not signal the worker to stop", self.name);
            }
            match handle.join() {
                Ok(engine) => self.engine = Some(engine),
                Err(_) => warn!(
                    "{}: worker thread panicked; {} is gone",
                    self.name, self.what
                ),
            }
        }
    }
}

/// Starts a device worker thread named `name` that confines itself to `kind`'s seccomp filter
/// (when [`crate::seccomp::enabled`]) and then runs `run(worker)`.
///
/// Waits until the thread is confined. When it cannot be, the thread runs `give_back(worker)`
/// instead, and the error comes back with that result, so that the device keeps its state.
fn spawn_worker<W, T>(
    name: String,
    kind: ThreadKind,
    worker: W,
    run: fn(W) -> T,
    give_back: fn(W) -> T,
) -> Result<std::thread::JoinHandle<T>, (ActivateError, Option<T>)>
where
    W: Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let handle = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let confined = if crate::seccomp::enabled() {
                crate::seccomp::confine_current_thread(kind)
            } else {
                Ok(())
            };
            let ok = confined.is_ok();
            // The receiver waits for this message; it is gone only if activation gave up.
            let _ = tx.send(confined);
            if ok {
                run(worker)
            } else {
                give_back(worker)
            }
        })
        .map_err(|e| (ActivateError::Spawn(e), None))?;
    match rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err((ActivateError::Confine(e), handle.join().ok())),
        Err(_) => Err((ActivateError::WorkerGone, handle.join().ok())),
    }
}
