//! The guest agent's server: answers control requests (see [`crate::protocol`])
//! and wires stdio connections to the processes it starts with the library.
//!
//! Independent of the transport: [`Server::serve`] takes any two [`Listener`]s
//! (vsock in the VM, Unix sockets in tests).

mod gate;
mod helper;
mod layers;
pub mod pid1;
mod pump;
mod reaper;
mod resources;
mod vsock;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxSeccomp, Process, Spec};

pub use gate::GateError;
pub use helper::HelperError;
pub use layers::LayerError;
pub use resources::{ProcTable, ResourceError};
pub use vsock::{bind_unix, ListenError, Listener, VsockListener};

use self::layers::Prepared;
use self::pump::{Attached, Attachments, ExitFlag, Sink};
use self::reaper::{lock, Once, Reaper};
use crate::cgroups::Cgroup;
use crate::hooks::SpawnHooks;
use crate::protocol::{
    check_version, read_frame, read_frame_bytes, write_frame, GuestRootfs, ProtocolError, Request,
    RequestBody, Response, ResponseBody, StdioAttach, StdioStream, PROTOCOL_VERSION,
};
use crate::{spawn_exec, spawn_with, ContainerSetup, ExecSetup, SpawnOptions, Stdio};

/// How long a start waits for the stdio streams it expects to be attached.
const ATTACH_WAIT: Duration = Duration::from_secs(1);

/// The server's settings.
pub struct Config {
    /// Where per-container mount points live (`/run/berth` in the guest).
    pub state_dir: PathBuf,
    /// Called after the `Shutdown` request was answered.
    pub on_shutdown: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// A failure that stops the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A thread could not be started.
    #[error("failed to start the {what} thread")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The agent's server; cheap to clone.
#[derive(Debug, Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    reaper: OnceLock<Arc<Reaper>>,
    attachments: Attachments,
    attached: Condvar,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    /// One helper fork at a time, so no helper holds another start's descriptors.
    spawn_lock: Mutex<()>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy)]
struct Exit {
    code: i32,
    oom_killed: bool,
}

#[derive(Debug)]
enum Kind {
    Container {
        cgroups_path: Option<String>,
        /// The spec's `linux.seccomp`, which exec'd processes get too.
        seccomp: Option<LinuxSeccomp>,
        terminal: bool,
        interactive: bool,
    },
    Exec,
}

#[derive(Debug)]
enum State {
    Starting,
    /// A created container: its process is set up and blocked on the exec FIFO
    /// `gate` until StartContainer.
    Created {
        pid: Pid,
        tty: Option<Arc<OwnedFd>>,
        gate: PathBuf,
    },
    Running {
        pid: Pid,
        tty: Option<Arc<OwnedFd>>,
    },
    Exited,
}

/// A container or exec process.
#[derive(Debug)]
struct Entry {
    kind: Kind,
    state: Mutex<State>,
    /// Set once: how it ended, or why it failed to start.
    done: Once<Result<Exit, String>>,
}

/// A request failure: the message and, for command errors, Docker's exit code.
#[derive(Debug)]
struct Failure {
    message: String,
    exit_code: Option<i32>,
}

impl<T: Into<String>> From<T> for Failure {
    fn from(message: T) -> Failure {
        Failure {
            message: message.into(),
            exit_code: None,
        }
    }
}

type Reply = Result<ResponseBody, Failure>;

impl Server {
    /// A server with no containers.
    pub fn new(config: Config) -> Server {
        Server {
            inner: Arc::new(Inner {
                config,
                reaper: OnceLock::new(),
                attachments: Attachments::default(),
                attached: Condvar::new(),
                entries: Mutex::new(HashMap::new()),
                spawn_lock: Mutex::new(()),
            }),
        }
    }

    /// Accept control connections from `control` and stdio connections from
    /// `stdio`, one thread per connection; runs until the process ends.
    pub fn serve(
        &self,
        control: impl Listener,
        stdio: impl Listener,
    ) -> Result<Infallible, ServeError> {
        let server = self.clone();
        std::thread::Builder::new()
            .name("stdio-accept".into())
            .spawn(move || {
                accept_loop(&stdio, |conn| {
                    let server = server.clone();
                    std::thread::Builder::new()
                        .name("stdio-attach".into())
                        .spawn(move || server.handle_stdio_connection(conn))
                        .map(drop)
                })
            })
            .map_err(|source| ServeError::Thread {
                what: "stdio accept",
                source,
            })?;
        accept_loop(&control, |conn| {
            let server = self.clone();
            std::thread::Builder::new()
                .name("control".into())
                .spawn(move || server.handle_control_connection(conn))
                .map(drop)
        });
        // `accept_loop` never returns.
        loop {
            std::thread::park();
        }
    }

    /// Answer requests on one control connection until it closes. A malformed
    /// frame gets an error response; an oversized one closes the connection.
    pub fn handle_control_connection(&self, conn: OwnedFd) {
        let mut file = File::from(conn);
        loop {
            let bytes = match read_frame_bytes(&mut file) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!("closing a control connection: {}", helper::chain(&e));
                    return;
                }
            };
            let request: Request = match serde_json::from_slice(&bytes) {
                Ok(request) => request,
                Err(e) => {
                    // Answer with the id if the frame has a readable one.
                    let id = serde_json::from_slice::<serde_json::Value>(&bytes)
                        .ok()
                        .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64))
                        .unwrap_or(0);
                    let message = helper::chain(&ProtocolError::Json(e));
                    let response = Response {
                        id,
                        body: ResponseBody::error(message),
                    };
                    if write_frame(&mut file, &response).is_err() {
                        return;
                    }
                    continue;
                }
            };
            let shutdown = matches!(request.body, RequestBody::Shutdown)
                && request.version == PROTOCOL_VERSION;
            let body = match check_version(&request) {
                Some(error) => error,
                None => match self.dispatch(request.body) {
                    Ok(body) => body,
                    Err(Failure { message, exit_code }) => {
                        ResponseBody::Error { message, exit_code }
                    }
                },
            };
            let response = Response {
                id: request.id,
                body,
            };
            let written = write_frame(&mut file, &response);
            if shutdown {
                (self.inner.config.on_shutdown)();
            }
            if written.is_err() {
                return;
            }
        }
    }

    /// Read the attach frame of one stdio connection and keep the connection
    /// for the process it names; a bad frame closes it.
    pub fn handle_stdio_connection(&self, conn: OwnedFd) {
        let mut file = File::from(conn);
        match read_frame::<_, StdioAttach>(&mut file) {
            Ok(Some(attach)) => {
                self.inner
                    .attachments
                    .attach(attach.id, attach.stream, file.into());
                // Wake starts waiting for their streams.
                let _guard = lock(&self.inner.entries);
                self.inner.attached.notify_all();
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("dropping a stdio connection: {}", helper::chain(&e)),
        }
    }

    fn dispatch(&self, body: RequestBody) -> Reply {
        match body {
            RequestBody::Ping => Ok(ResponseBody::Pong {
                version: PROTOCOL_VERSION,
                agent: env!("CARGO_PKG_VERSION").to_owned(),
            }),
            RequestBody::CreateContainer {
                id,
                spec,
                rootfs,
                terminal,
                interactive,
                hook_state,
            } => self.create(id, spec, &rootfs, terminal, interactive, hook_state),
            RequestBody::StartContainer { id } => self.start(&id),
            RequestBody::Exec {
                container_id,
                exec_id,
                process,
                terminal,
                interactive,
            } => self.exec(&container_id, exec_id, process, terminal, interactive),
            RequestBody::Wait { id } => {
                let entry = self.entry(&id)?;
                match entry.done.wait() {
                    Ok(exit) => Ok(ResponseBody::Exited {
                        exit_code: exit.code,
                        oom_killed: exit.oom_killed,
                    }),
                    Err(message) => Err(message.into()),
                }
            }
            RequestBody::Signal { id, signal } => {
                let signal = Signal::try_from(signal)
                    .map_err(|_| Failure::from(format!("invalid signal number {signal}")))?;
                let pid = self.running_pid(&id)?;
                let is_exec = matches!(self.entry(&id)?.kind, Kind::Exec);
                // An exec process runs under a supervisor that forwards signals; SIGKILL
                // cannot be forwarded, so it goes to the supervised process itself (the
                // supervisor then exits with its status).
                let targets = match (is_exec, signal) {
                    (true, Signal::SIGKILL) => {
                        let children = resources::ProcTable::system().children(pid.as_raw());
                        if children.is_empty() {
                            vec![pid]
                        } else {
                            children.into_iter().map(Pid::from_raw).collect()
                        }
                    }
                    _ => vec![pid],
                };
                for target in targets {
                    kill(target, signal).map_err(|e| {
                        format!("failed to send {signal} to {id} (pid {target}): {e}")
                    })?;
                }
                Ok(ResponseBody::Ok)
            }
            RequestBody::SignalAll { id, signal } => {
                let signal = Signal::try_from(signal)
                    .map_err(|_| Failure::from(format!("invalid signal number {signal}")))?;
                let cgroup = match self.cgroup(&id) {
                    Ok(cgroup) => cgroup,
                    // Nothing left to signal.
                    Err(_) if matches!(*lock(&self.entry(&id)?.state), State::Exited) => {
                        return Ok(ResponseBody::Ok)
                    }
                    Err(failure) => return Err(failure),
                };
                for pid in resources::pids(&cgroup).map_err(failure)? {
                    match kill(Pid::from_raw(pid), signal) {
                        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                        Err(e) => {
                            return Err(format!("failed to send {signal} to pid {pid}: {e}").into())
                        }
                    }
                }
                Ok(ResponseBody::Ok)
            }
            RequestBody::ResizeTty { id, rows, cols } => {
                let entry = self.entry(&id)?;
                let tty = match &*lock(&entry.state) {
                    State::Running { tty: Some(tty), .. }
                    | State::Created { tty: Some(tty), .. } => Arc::clone(tty),
                    State::Running { tty: None, .. } | State::Created { tty: None, .. } => {
                        return Err(format!("{id} has no terminal").into())
                    }
                    _ => return Err(format!("{id} is not running").into()),
                };
                resize(tty.as_fd(), rows, cols)
                    .map_err(|e| format!("failed to resize the terminal of {id}: {e}"))?;
                Ok(ResponseBody::Ok)
            }
            RequestBody::Stats { id } => {
                let cgroup = self.cgroup(&id)?;
                resources::stats(&cgroup).map_err(failure)
            }
            RequestBody::Pause { id } => self.set_frozen(&id, true),
            RequestBody::Resume { id } => self.set_frozen(&id, false),
            RequestBody::ListProcesses { id } => {
                let cgroup = self.cgroup(&id)?;
                resources::processes(&cgroup, &resources::ProcTable::system()).map_err(failure)
            }
            RequestBody::UpdateResources { id, resources } => {
                let cgroup = self.cgroup(&id)?;
                resources::update(&cgroup, &resources).map_err(failure)?;
                Ok(ResponseBody::Ok)
            }
            RequestBody::Shutdown => Ok(ResponseBody::Ok),
        }
    }

    fn entry(&self, id: &str) -> Result<Arc<Entry>, Failure> {
        lock(&self.inner.entries)
            .get(id)
            .cloned()
            .ok_or_else(|| format!("no such container or exec: {id}").into())
    }

    /// The cgroup of container `id`, which must have been started.
    fn cgroup(&self, id: &str) -> Result<Cgroup, Failure> {
        let entry = self.entry(id)?;
        let Kind::Container { cgroups_path, .. } = &entry.kind else {
            return Err(format!("{id} is an exec process, not a container").into());
        };
        let Some(path) = cgroups_path else {
            return Err(format!("container {id} has no cgroup").into());
        };
        match &*lock(&entry.state) {
            State::Running { .. } | State::Created { .. } => {}
            State::Exited => return Err(format!("container {id} has exited").into()),
            _ => return Err(format!("container {id} was not started").into()),
        }
        resources::open(path).map_err(failure)
    }

    fn set_frozen(&self, id: &str, frozen: bool) -> Reply {
        let cgroup = self.cgroup(id)?;
        if resources::is_frozen(&cgroup) == frozen {
            let state = if frozen { "paused" } else { "not paused" };
            return Err(format!("container {id} is already {state}").into());
        }
        resources::set_frozen(&cgroup, frozen).map_err(failure)?;
        Ok(ResponseBody::Ok)
    }

    fn running_pid(&self, id: &str) -> Result<Pid, Failure> {
        let entry = self.entry(id)?;
        let state = lock(&entry.state);
        match &*state {
            State::Running { pid, .. } | State::Created { pid, .. } => Ok(*pid),
            _ => Err(format!("{id} is not running").into()),
        }
    }

    fn reaper(&self) -> Result<Arc<Reaper>, Failure> {
        if let Some(reaper) = self.inner.reaper.get() {
            return Ok(Arc::clone(reaper));
        }
        let mut guard = lock(&self.inner.spawn_lock);
        let _ = &mut guard;
        if let Some(reaper) = self.inner.reaper.get() {
            return Ok(Arc::clone(reaper));
        }
        let reaper =
            Reaper::start().map_err(|e| format!("failed to start the reaper thread: {e}"))?;
        let _ = self.inner.reaper.set(Arc::clone(&reaper));
        Ok(reaper)
    }

    /// Reserve `id` for a new entry.
    fn insert(&self, id: &str, entry: Entry) -> Result<Arc<Entry>, Failure> {
        let mut entries = lock(&self.inner.entries);
        if entries.contains_key(id) {
            return Err(format!("the id {id} is already in use").into());
        }
        let entry = Arc::new(entry);
        entries.insert(id.to_owned(), Arc::clone(&entry));
        Ok(entry)
    }

    fn create(
        &self,
        id: String,
        mut spec: Spec,
        rootfs: &GuestRootfs,
        terminal: bool,
        interactive: bool,
        hook_state: Option<serde_json::Value>,
    ) -> Reply {
        validate_id(&id)?;
        if spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_ref())
            .is_none_or(Vec::is_empty)
        {
            return Err("invalid container spec: process.args is empty".into());
        }
        // Every container gets a cgroup, so that it can be paused, listed and measured.
        let cgroups_path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| format!("/berth/{id}"));
        if let Some(linux) = spec.linux_mut() {
            linux.set_cgroups_path(Some(PathBuf::from(&cgroups_path)));
        }
        let cgroups_path = spec.linux().as_ref().map(|_| cgroups_path);
        let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
        let hooks = spec.hooks().clone().map(|hooks| SpawnHooks {
            hooks,
            state: hook_state.unwrap_or_else(|| default_hook_state(&id, &spec)),
        });
        let entry = self.insert(
            &id,
            Entry {
                kind: Kind::Container {
                    cgroups_path,
                    seccomp,
                    terminal,
                    interactive,
                },
                state: Mutex::new(State::Starting),
                done: Once::new(),
            },
        )?;
        let dir = self.inner.config.state_dir.join(&id);
        let created = self.set_up(&id, &entry, spec, &dir, rootfs, hooks);
        if created.is_err() {
            // A failed create leaves no trace: its id may be used again.
            lock(&self.inner.entries).remove(&id);
        }
        created
    }

    /// Prepare the root filesystem and start the container's process up to the
    /// exec FIFO (createContainer hooks included).
    fn set_up(
        &self,
        id: &str,
        entry: &Arc<Entry>,
        spec: Spec,
        dir: &std::path::Path,
        rootfs: &GuestRootfs,
        hooks: Option<SpawnHooks>,
    ) -> Reply {
        let Kind::Container {
            cgroups_path,
            terminal,
            interactive,
            ..
        } = &entry.kind
        else {
            return Err(format!("{id} is an exec process, not a container").into());
        };
        let mut prepared = layers::prepare(dir, rootfs).map_err(|e| {
            format!(
                "failed to prepare the root filesystem of {id}: {}",
                helper::chain(&e)
            )
        })?;
        let (gate, fifo) = match gate::make(dir) {
            Ok(made) => made,
            Err(e) => {
                prepared.undo();
                return Err(failure(e));
            }
        };
        let attached = self.take_attached(id, *terminal, *interactive);
        let rootfs = prepared.rootfs.clone();
        let container_id = id.to_owned();
        let started = self.launch(attached, *terminal, *interactive, move |stdio| {
            let options = SpawnOptions {
                exec_fifo: Some(fifo),
                hooks,
                preserve_fds: 0,
            };
            let setup = ContainerSetup {
                id: container_id,
                spec,
                rootfs,
                stdio,
                init: false,
                no_pivot: false,
            };
            spawn_with(setup, options)
        });
        match started {
            Ok(launched) => {
                let cgroup = cgroups_path.as_deref().and_then(|p| Cgroup::open(p).ok());
                self.launched(id, entry, launched, Some(prepared), cgroup, Some(gate));
                Ok(ResponseBody::Created)
            }
            Err(failure) => {
                let _ = std::fs::remove_file(&gate);
                prepared.undo();
                *lock(&entry.state) = State::Exited;
                entry.done.set(Err(format!(
                    "container {id} failed to start: {}",
                    failure.message
                )));
                Err(failure)
            }
        }
    }

    /// Wait (up to [`ATTACH_WAIT`]) until the streams a process of this kind
    /// is expected to use are attached, then take what is there.
    fn take_attached(&self, id: &str, terminal: bool, interactive: bool) -> Attached {
        let expected: &[StdioStream] = match (terminal, interactive) {
            (true, _) => &[StdioStream::Tty],
            (false, true) => &[StdioStream::Stdin, StdioStream::Stdout, StdioStream::Stderr],
            (false, false) => &[StdioStream::Stdout, StdioStream::Stderr],
        };
        let deadline = Instant::now() + ATTACH_WAIT;
        let mut guard = lock(&self.inner.entries);
        while !self.inner.attachments.has_all(id, expected) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            guard = self
                .inner
                .attached
                .wait_timeout(guard, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        drop(guard);
        self.inner.attachments.take(id)
    }

    /// Let a created container's process go on (its startContainer hooks run, then it execs).
    fn start(&self, id: &str) -> Reply {
        let entry = self.entry(id)?;
        if !matches!(entry.kind, Kind::Container { .. }) {
            return Err(format!("{id} is an exec process, not a container").into());
        }
        let (pid, gate) = {
            let mut state = lock(&entry.state);
            match &*state {
                State::Created { pid, tty, gate } => {
                    let opened = (*pid, gate.clone());
                    *state = State::Running {
                        pid: *pid,
                        tty: tty.clone(),
                    };
                    opened
                }
                State::Exited => return Err(format!("container {id} has exited").into()),
                _ => return Err(format!("container {id} was already started").into()),
            }
        };
        gate::release(&gate, || matches!(*lock(&entry.state), State::Exited))
            .map_err(|e| format!("container {id} failed to start: {}", helper::chain(&e)))?;
        Ok(ResponseBody::Started { pid: pid.as_raw() })
    }

    fn exec(
        &self,
        container_id: &str,
        exec_id: String,
        process: Process,
        terminal: bool,
        interactive: bool,
    ) -> Reply {
        validate_id(&exec_id)?;
        let container = self.entry(container_id)?;
        let Kind::Container {
            cgroups_path,
            seccomp,
            ..
        } = &container.kind
        else {
            return Err(format!("{container_id} is an exec process, not a container").into());
        };
        let container_pid = match &*lock(&container.state) {
            State::Running { pid, .. } => *pid,
            _ => return Err(format!("container {container_id} is not running").into()),
        };
        let entry = self.insert(
            &exec_id,
            Entry {
                kind: Kind::Exec,
                state: Mutex::new(State::Starting),
                done: Once::new(),
            },
        )?;
        let attached = self.take_attached(&exec_id, terminal, interactive);
        let cgroups_path = cgroups_path.clone();
        let seccomp = seccomp.clone();
        let started = self.launch(attached, terminal, interactive, move |stdio| {
            spawn_exec(ExecSetup {
                container_pid,
                process,
                cgroups_path,
                stdio,
                seccomp,
            })
        });
        match started {
            Ok(launched) => {
                let pid = self.launched(&exec_id, &entry, launched, None, None, None);
                Ok(ResponseBody::Started { pid: pid.as_raw() })
            }
            Err(failure) => {
                // A failed exec leaves no trace: its id may be used again.
                lock(&self.inner.entries).remove(&exec_id);
                *lock(&entry.state) = State::Exited;
                entry.done.set(Err(format!(
                    "exec {exec_id} failed to start: {}",
                    failure.message
                )));
                Err(failure)
            }
        }
    }

    /// Wire stdio, start the process through the helper, start the pumps.
    fn launch<F>(
        &self,
        attached: Attached,
        terminal: bool,
        interactive: bool,
        start: F,
    ) -> Result<Launched, Failure>
    where
        F: FnOnce(Stdio) -> Result<crate::Spawned, crate::SpawnError>,
    {
        let reaper = self.reaper()?;
        let wiring = wire(attached, terminal, interactive)
            .map_err(|e| format!("failed to set up stdio: {e}"))?;
        let Wiring {
            stdio,
            console,
            pumps: planned,
            tty_conn,
        } = wiring;
        let spawned = {
            let _guard = lock(&self.inner.spawn_lock);
            helper::spawn_in_helper(&reaper, move || start(stdio))
        };
        let (pid, exit) = spawned.map_err(|e| match e {
            HelperError::Spawn { message, exit_code } => Failure {
                message,
                exit_code: matches!(exit_code, 126 | 127).then_some(exit_code),
            },
            other => Failure::from(helper::chain(&other)),
        })?;
        let exited: ExitFlag = Arc::new(AtomicBool::new(false));
        let mut pumps = Vec::new();
        let mut start_pump = |name: &str, from: OwnedFd, to: Sink| match pump::start(
            name,
            from,
            to,
            Arc::clone(&exited),
        ) {
            Ok(handle) => pumps.push(handle),
            Err(e) => tracing::warn!("failed to start the {name} pump: {e}"),
        };
        for (name, from, to) in planned {
            start_pump(name, from, to);
        }
        let mut tty = None;
        if let Some(console) = console {
            match crate::stdio::receive_console(console.as_fd()) {
                Ok(master) => {
                    let dup = |fd: &OwnedFd| fd.try_clone();
                    match (&tty_conn, dup(&master)) {
                        (Some(conn), Ok(reader)) => {
                            if let Ok(out) = dup(conn) {
                                start_pump("tty-out", reader, Sink::Fd(out));
                            }
                            if interactive {
                                if let (Ok(input), Ok(writer)) = (dup(conn), dup(&master)) {
                                    start_pump("tty-in", input, Sink::Fd(writer));
                                }
                            }
                        }
                        (None, Ok(reader)) => start_pump("tty-out", reader, Sink::Discard),
                        (_, Err(e)) => tracing::warn!("failed to duplicate the pty master: {e}"),
                    }
                    tty = Some(Arc::new(master));
                }
                Err(e) => tracing::warn!("no pty master from the process: {e}"),
            }
        }
        Ok(Launched {
            pid,
            exit,
            tty,
            pumps,
            exited,
        })
    }

    /// Record a started process (created, held at `gate`, or running) and start
    /// the thread that finishes it.
    fn launched(
        &self,
        id: &str,
        entry: &Arc<Entry>,
        launched: Launched,
        prepared: Option<Prepared>,
        cgroup: Option<Cgroup>,
        gate: Option<PathBuf>,
    ) -> Pid {
        let pid = launched.pid;
        let tty = launched.tty.clone();
        *lock(&entry.state) = match gate {
            Some(gate) => State::Created { pid, tty, gate },
            None => State::Running { pid, tty },
        };
        let finisher_entry = Arc::clone(entry);
        let spawned = std::thread::Builder::new()
            .name("finisher".into())
            .spawn(move || finish(&finisher_entry, launched, prepared, cgroup));
        if let Err(e) = spawned {
            tracing::warn!("failed to start the finisher thread of {id}: {e}");
        }
        pid
    }
}

/// A started process and its stdio pumps.
struct Launched {
    pid: Pid,
    exit: Arc<Once<i32>>,
    tty: Option<Arc<OwnedFd>>,
    pumps: Vec<JoinHandle<()>>,
    exited: ExitFlag,
}

/// Wait for the process, drain its output, record how it ended, clean up.
fn finish(entry: &Entry, launched: Launched, prepared: Option<Prepared>, cgroup: Option<Cgroup>) {
    let code = launched.exit.wait();
    launched
        .exited
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for pump in launched.pumps {
        let _ = pump.join();
    }
    let oom_killed = cgroup
        .as_ref()
        .and_then(|c| c.oom_kill_count().ok())
        .is_some_and(|n| n > 0);
    // A container killed before it was started leaves its exec FIFO behind.
    if let State::Created { gate, .. } = std::mem::replace(&mut *lock(&entry.state), State::Exited)
    {
        let _ = std::fs::remove_file(gate);
    }
    drop(launched.tty);
    // Unmount before answering waiters, so a finished container leaves nothing
    // mounted by the time Wait returns.
    if let Some(mut prepared) = prepared {
        prepared.undo();
    }
    entry.done.set(Ok(Exit { code, oom_killed }));
    if let Some(cgroup) = cgroup {
        if let Err(e) = cgroup.destroy() {
            tracing::warn!("failed to remove a container cgroup: {e}");
        }
    }
}

/// How a process's streams are connected.
struct Wiring {
    stdio: Stdio,
    /// Our end of the console socket (terminal only).
    console: Option<OwnedFd>,
    /// Pumps to start once the process runs: (name, from, to).
    pumps: Vec<(&'static str, OwnedFd, Sink)>,
    /// The host's tty connection (terminal only).
    tty_conn: Option<OwnedFd>,
}

fn dev_null(write: bool) -> nix::Result<OwnedFd> {
    let flags = if write {
        OFlag::O_WRONLY
    } else {
        OFlag::O_RDONLY
    };
    nix::fcntl::open(
        "/dev/null",
        flags | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}

fn wire(attached: Attached, terminal: bool, interactive: bool) -> std::io::Result<Wiring> {
    if terminal {
        let (ours, theirs) = UnixStream::pair()?;
        return Ok(Wiring {
            stdio: Stdio::ConsoleSocket {
                socket: theirs.into(),
            },
            console: Some(ours.into()),
            pumps: Vec::new(),
            tty_conn: attached.tty,
        });
    }
    let mut pumps = Vec::new();
    let stdin = match attached.stdin.filter(|_| interactive) {
        Some(conn) => {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
            pumps.push(("stdin", conn, Sink::Fd(w)));
            r
        }
        None => dev_null(false)?,
    };
    let mut output = |name: &'static str, conn: Option<OwnedFd>| -> std::io::Result<OwnedFd> {
        match conn {
            Some(conn) => {
                let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
                pumps.push((name, r, Sink::Fd(conn)));
                Ok(w)
            }
            None => Ok(dev_null(true)?),
        }
    };
    let stdout = output("stdout", attached.stdout)?;
    let stderr = output("stderr", attached.stderr)?;
    Ok(Wiring {
        stdio: Stdio::Fds {
            stdin,
            stdout,
            stderr,
        },
        console: None,
        pumps,
        tty_conn: None,
    })
}

/// The runtime-spec state the set-up hooks read when the host sent none (the
/// pid is filled in at start).
fn default_hook_state(id: &str, spec: &Spec) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": spec.version(),
        "id": id,
        "status": "created",
        "pid": 0,
        "bundle": "",
        "annotations": spec.annotations().clone().unwrap_or_default(),
    })
}

/// A request failure from an error and its causes.
fn failure(error: impl std::error::Error) -> Failure {
    Failure::from(helper::chain(&error))
}

/// Ids name directories: no separators, no dot names, nothing odd.
fn validate_id(id: &str) -> Result<(), Failure> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid id {id:?}: use 1 to 128 of [A-Za-z0-9_.-]").into())
    }
}

fn resize(fd: std::os::fd::BorrowedFd<'_>, rows: u16, cols: u16) -> std::io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which points to a
    // live local for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn accept_loop<L: Listener>(listener: &L, mut handle: impl FnMut(OwnedFd) -> std::io::Result<()>) {
    loop {
        match listener.accept() {
            Ok(conn) => {
                if let Err(e) = handle(conn) {
                    tracing::warn!("failed to start a connection thread: {e}");
                }
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                // EMFILE and friends: do not spin.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[cfg(test)]
mod tests;
