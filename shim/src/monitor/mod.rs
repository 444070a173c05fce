//! Supervising a container: start its process, pump its output into the log (and to the user
//! when attached), and when it exits record how, release its resources, and honour `--rm`.
//!
//! A foreground `run` supervises in the `berth` process itself; `run -d` and `start` hand the
//! job to a detached `berth __monitor` process that outlives the command.

pub mod log;
pub mod session;
pub mod terminal;

use std::io;

use crate::container::{ContainerError, ContainerStore, Status};
use crate::context::Context;
use crate::runtime::{self, Launch, RuntimeError};
use crate::store::{ImageStore, StoreError};

pub use session::Wiring;

/// A container could not be started or supervised.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Image(#[from] StoreError),
    #[error("container {0} is already running")]
    AlreadyRunning(String),
    #[error("could not start container {name}")]
    Start {
        name: String,
        /// Boxed: a runtime error is large, and this enum travels in every result.
        #[source]
        source: Box<RuntimeError>,
    },
    #[error("could not release the resources of container {name}")]
    Release {
        name: String,
        #[source]
        source: Box<RuntimeError>,
    },
    #[error("could not supervise the container's input and output")]
    Io(#[from] io::Error),
}

impl MonitorError {
    /// Docker's exit status for a failed start: 127/126 for a bad command, 125 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            MonitorError::Start { source, .. } => source.exit_code(),
            _ => 125,
        }
    }
}

/// Starts container `id` and supervises it until it exits; returns its exit code.
/// `started` is called once the process runs (or failed to), before any waiting.
pub fn run_container(
    ctx: &Context,
    id: &str,
    wiring: Wiring,
    started: impl FnOnce(Result<(), &MonitorError>),
) -> Result<i32, MonitorError> {
    let store = ContainerStore::open(&ctx.root)?;
    match launch(ctx, &store, id, wiring) {
        Ok((mut process, io, record)) => {
            started(Ok(()));
            let log = log::LogWriter::open(&store.log_path(id))?;
            let code = session::supervise(process.as_mut(), io, Some(log));
            finish(&store, &record, code.as_ref().ok().copied())?;
            Ok(code?)
        }
        Err(e) => {
            started(Err(&e));
            Err(e)
        }
    }
}

type Launched = (
    Box<dyn runtime::ContainerProcess>,
    session::SessionIo,
    crate::container::ContainerRecord,
);

fn launch(
    ctx: &Context,
    store: &ContainerStore,
    id: &str,
    wiring: Wiring,
) -> Result<Launched, MonitorError> {
    let record = store.find(id)?;
    let _lock = store.lock(id)?;
    let mut state = store.load_state(id)?;
    if state.status == Status::Running && state.process_alive() {
        return Err(MonitorError::AlreadyRunning(record.name));
    }
    let images = ImageStore::open(&ctx.root)?;
    let image = images.resolve(&record.image_id)?;
    let layers = images.layer_dirs(&image)?;
    let runtime =
        runtime::for_name(&record.host.runtime).map_err(|source| MonitorError::Start {
            name: record.name.clone(),
            source: Box::new(source),
        })?;
    let (io, stdio) = session::wire(wiring)?;
    let launched = runtime.start(Launch {
        record: &record,
        dir: store.dir(id),
        layers,
        stdio,
    });
    let process = match launched {
        Ok(process) => process,
        Err(source) => {
            state.error = Some(source.to_string());
            state.exit_code = Some(source.exit_code());
            store.save_state(id, &state)?;
            let error = MonitorError::Start {
                name: record.name.clone(),
                source: Box::new(source),
            };
            if record.host.auto_remove {
                drop(_lock);
                store.remove(id)?;
            }
            return Err(error);
        }
    };
    let pid = process.pid();
    state.status = Status::Running;
    state.pid = Some(pid.as_raw());
    state.pid_start_time = crate::container::process_start_time(pid.as_raw());
    state.monitor_pid = Some(std::process::id() as i32);
    state.monitor_start_time = crate::container::process_start_time(std::process::id() as i32);
    state.exit_code = None;
    state.oom_killed = false;
    state.error = None;
    state.started_at = Some(chrono::Utc::now());
    state.finished_at = None;
    store.save_state(id, &state)?;
    Ok((process, io, record))
}

/// Records the exit, releases the cgroup, and removes an `--rm` container.
fn finish(
    store: &ContainerStore,
    record: &crate::container::ContainerRecord,
    code: Option<i32>,
) -> Result<(), MonitorError> {
    let runtime =
        runtime::for_name(&record.host.runtime).map_err(|source| MonitorError::Release {
            name: record.name.clone(),
            source: Box::new(source),
        })?;
    let oom_killed = runtime.oom_killed(record);
    let released = runtime.release(record);
    {
        let _lock = store.lock(&record.id)?;
        let mut state = store.load_state(&record.id)?;
        state.status = Status::Exited;
        state.exit_code = Some(code.unwrap_or(255));
        state.oom_killed = oom_killed;
        state.pid = None;
        state.pid_start_time = None;
        state.monitor_pid = None;
        state.monitor_start_time = None;
        state.finished_at = Some(chrono::Utc::now());
        store.save_state(&record.id, &state)?;
    }
    released.map_err(|source| MonitorError::Release {
        name: record.name.clone(),
        source: Box::new(source),
    })?;
    if record.host.auto_remove {
        store.remove(&record.id)?;
    }
    Ok(())
}
