//! `exec` in a vm-mode container.
//!
//! The exec'd process runs in the guest; on the host a proxy stands for it: it
//! pumps the caller's fds 0/1/2 (or, with a terminal, a host pty sent to
//! `--console-socket`) to the process's stdio connections, forwards the signals
//! it gets to the process, and exits with the process's exit code.
//!
//! * In the foreground, berth-runtime itself is the proxy (and the pid in
//!   `--pid-file`).
//! * With `--detach`, the proxy is a relay (`berth-runtime vm-relay --exec ID`,
//!   its own session) that outlives berth-runtime: the pid file names the relay,
//!   so a subreaper (containerd's shim, conmon) waits for it and reads the exit
//!   status as it would the process's. The relay reads the process from
//!   `ROOT/ID/EXEC_ID.process.json`, sends Exec itself and reports the outcome
//!   in `ROOT/ID/EXEC_ID.status.json`. A guard process forked by the relay
//!   kills the guest process if the relay is killed (SIGKILL cannot be
//!   forwarded), so the process never outlives its proxy.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use berth_agent::protocol::{RequestBody, ResponseBody};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use oci_spec::runtime::Process;
use serde::{Deserialize, Serialize};

use super::{is_dev_null, pump_fds, VmModeError};
use crate::oci::cli::{ExecArgs, Global, VmRelayArgs};
use crate::oci::container::{self, Record};
use crate::oci::create::{write_pid_file, PidFileError};
use crate::runtime::vm::client::{Agent, ClientError};
use crate::runtime::vm::{self, VmError};

/// How long a detached exec waits for its relay to report.
const RELAY_REPORT: Duration = Duration::from_secs(60);

/// Signals the proxy forwards to the guest process (not SIGCHLD, SIGWINCH, SIGPIPE,
/// SIGURG, nor those raised by faults in the proxy itself).
const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGTERM,
    Signal::SIGCONT,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGIO,
    Signal::SIGPWR,
];

/// An exec in a vm-mode container failed.
#[derive(Debug, thiserror::Error)]
pub enum VmExecError {
    #[error("a terminal requires --console-socket")]
    NoConsoleSocket,
    #[error("cannot connect to console socket {}", path.display())]
    ConsoleSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the guest agent")]
    Agent(#[from] ClientError),
    #[error("cannot connect the exec's stdio")]
    Stdio(#[from] VmError),
    #[error(transparent)]
    Relay(Box<VmModeError>),
    #[error("cannot set a timeout on the guest agent connection")]
    Timeout(#[source] std::io::Error),
    #[error("the guest agent answered {0} to {1}")]
    Answer(String, &'static str),
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt {}", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot start the exec relay")]
    SpawnRelay(#[source] std::io::Error),
    #[error("cannot check on the exec relay")]
    WatchRelay(#[source] std::io::Error),
    #[error("the exec relay exited before it reported: {0}")]
    RelayExited(std::process::ExitStatus),
    #[error("the exec relay did not report within {}s", RELAY_REPORT.as_secs())]
    RelaySilent,
    #[error("cannot exec in the container: {0}")]
    Guest(String),
    #[error("cannot block the signals the exec forwards")]
    Signals(#[source] nix::Error),
    #[error("cannot fork the exec relay's guard")]
    Guard(#[source] nix::Error),
    #[error(transparent)]
    PidFile(#[from] PidFileError),
}

impl From<VmModeError> for VmExecError {
    fn from(e: VmModeError) -> VmExecError {
        VmExecError::Relay(Box::new(e))
    }
}

/// What a detached exec's relay reports once the process started (or did not).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum RelayStatus {
    Started { guest_pid: i32 },
    Failed { message: String },
}

fn process_file(dir: &Path, exec_id: &str) -> PathBuf {
    dir.join(format!("{exec_id}.process.json"))
}

fn status_file(dir: &Path, exec_id: &str) -> PathBuf {
    dir.join(format!("{exec_id}.status.json"))
}

fn write(path: PathBuf, contents: &[u8]) -> Result<(), VmExecError> {
    std::fs::write(&path, contents).map_err(|source| VmExecError::Write { path, source })
}

/// A fresh exec id (also the name of the relay's files in the state dir).
fn new_exec_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("exec-{}-{nanos}", std::process::id())
}

/// `berth-runtime exec` in a vm container; the exit code (0 when detached).
pub fn exec(
    global: &Global,
    record: &Record,
    process: Process,
    args: &ExecArgs,
) -> Result<i32, VmExecError> {
    let terminal = process.terminal().unwrap_or(false);
    let console = match (terminal, &args.console_socket) {
        (true, Some(path)) => Some(path.clone()),
        (true, None) => return Err(VmExecError::NoConsoleSocket),
        (false, _) => None,
    };
    let interactive = !terminal && !is_dev_null(0);
    let exec_id = new_exec_id();
    if args.detach {
        let relay_pid = spawn_relay(global, record, &exec_id, &process, console, interactive)?;
        if let Some(pid_file) = &args.pid_file {
            write_pid_file(pid_file, relay_pid)?;
        }
        return Ok(0);
    }
    // The foreground: this process is the proxy.
    let signals = block_forwarded()?;
    let dir = container::dir(global, &record.id);
    let session = Session::attach(&dir, &exec_id, console, interactive)?;
    session.start(&record.id, process, terminal, interactive)?;
    if let Some(pid_file) = &args.pid_file {
        write_pid_file(pid_file, std::process::id() as i32)?;
    }
    forward_signals(signals, &dir, &exec_id);
    session.wait()
}

/// Write the process for the relay, start it and wait for its report; the relay's pid.
fn spawn_relay(
    global: &Global,
    record: &Record,
    exec_id: &str,
    process: &Process,
    console: Option<PathBuf>,
    interactive: bool,
) -> Result<i32, VmExecError> {
    let dir = container::dir(global, &record.id);
    let spec = process_file(&dir, exec_id);
    let json = serde_json::to_vec(process).map_err(|source| VmExecError::Corrupt {
        path: spec.clone(),
        source,
    })?;
    write(spec.clone(), &json)?;
    let status = status_file(&dir, exec_id);
    let result = run_relay(global, &record.id, exec_id, &status, console, interactive);
    let _ = std::fs::remove_file(&spec);
    let _ = std::fs::remove_file(&status);
    result
}

fn run_relay(
    global: &Global,
    id: &str,
    exec_id: &str,
    status: &Path,
    console: Option<PathBuf>,
    interactive: bool,
) -> Result<i32, VmExecError> {
    // /proc/self/exe, not current_exe(): the running binary even when the file was
    // replaced meanwhile (a package upgrade), whose old path then no longer exists.
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("berth-runtime");
    cmd.arg("--root")
        .arg(&global.root)
        .arg("vm-relay")
        .arg("--exec")
        .arg(exec_id);
    match console {
        Some(path) => {
            // The pty carries everything; the caller's fds are not held.
            cmd.arg("--console-socket").arg(path);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
        None if interactive => {
            cmd.arg("--interactive");
        }
        None => {}
    }
    cmd.arg(id);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(VmExecError::SpawnRelay)?;
    let pid = child.id() as i32;
    let deadline = Instant::now() + RELAY_REPORT;
    loop {
        match std::fs::read(status) {
            Ok(bytes) => {
                let report: RelayStatus =
                    serde_json::from_slice(&bytes).map_err(|source| VmExecError::Corrupt {
                        path: status.to_path_buf(),
                        source,
                    })?;
                return match report {
                    RelayStatus::Started { .. } => Ok(pid),
                    RelayStatus::Failed { message } => {
                        let _ = child.wait();
                        Err(VmExecError::Guest(message))
                    }
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(VmExecError::Read {
                    path: status.to_path_buf(),
                    source,
                })
            }
        }
        if let Some(exit) = child.try_wait().map_err(VmExecError::WatchRelay)? {
            return Err(VmExecError::RelayExited(exit));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(VmExecError::RelaySilent);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `berth-runtime vm-relay --exec EXEC_ID ID`: start the process and proxy it
/// until it exits; the relay's exit code is the process's.
pub fn relay(global: &Global, args: &VmRelayArgs, exec_id: &str) -> Result<i32, VmExecError> {
    let dir = container::dir(global, &args.id);
    // Forked first, while this process has one thread.
    let guard = Guard::start(&dir, exec_id)?;
    let signals = block_forwarded()?;
    let status = status_file(&dir, exec_id);
    let report = |report: &RelayStatus| -> Result<(), VmExecError> {
        let tmp = status.with_extension("tmp");
        let json = serde_json::to_vec(report).map_err(|source| VmExecError::Corrupt {
            path: status.clone(),
            source,
        })?;
        write(tmp.clone(), &json)?;
        std::fs::rename(&tmp, &status).map_err(|source| VmExecError::Write {
            path: status.clone(),
            source,
        })
    };
    let started = read_process(&dir, exec_id).and_then(|process| {
        let terminal = process.terminal().unwrap_or(false);
        let session =
            Session::attach(&dir, exec_id, args.console_socket.clone(), args.interactive)?;
        let guest_pid = session.start(&args.id, process, terminal, args.interactive)?;
        Ok((session, guest_pid))
    });
    let session = match started {
        Ok((session, guest_pid)) => {
            report(&RelayStatus::Started { guest_pid })?;
            session
        }
        Err(e) => {
            guard.disarm();
            report(&RelayStatus::Failed {
                message: crate::error_chain(&e),
            })?;
            return Err(e);
        }
    };
    forward_signals(signals, &dir, exec_id);
    let code = session.wait();
    guard.disarm();
    code
}

fn read_process(dir: &Path, exec_id: &str) -> Result<Process, VmExecError> {
    let path = process_file(dir, exec_id);
    let text = std::fs::read(&path).map_err(|source| VmExecError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| VmExecError::Corrupt { path, source })
}

/// The stdio of one exec process, attached before it starts.
struct Session {
    dir: PathBuf,
    exec_id: String,
    outputs: Vec<JoinHandle<()>>,
    /// Set once the process runs, so that the tty pump sends resizes.
    tty_started: Option<Arc<AtomicBool>>,
}

impl Session {
    fn attach(
        dir: &Path,
        exec_id: &str,
        console: Option<PathBuf>,
        interactive: bool,
    ) -> Result<Session, VmExecError> {
        let (outputs, tty_started) = match console {
            Some(path) => {
                let socket = UnixStream::connect(&path)
                    .map_err(|source| VmExecError::ConsoleSocket { path, source })?;
                let attached = vm::stdio::attach(
                    dir,
                    exec_id,
                    berth_agent::Stdio::ConsoleSocket {
                        socket: socket.into(),
                    },
                    true,
                )?;
                (attached.outputs, Some(attached.started))
            }
            None => (pump_fds(dir, exec_id, interactive)?, None),
        };
        Ok(Session {
            dir: dir.to_path_buf(),
            exec_id: exec_id.to_owned(),
            outputs,
            tty_started,
        })
    }

    /// Send Exec; the guest pid.
    fn start(
        &self,
        container_id: &str,
        process: Process,
        terminal: bool,
        interactive: bool,
    ) -> Result<i32, VmExecError> {
        let mut agent = connect(&self.dir, Some(Duration::from_secs(60)))?;
        let body = agent.call(RequestBody::Exec {
            container_id: container_id.to_owned(),
            exec_id: self.exec_id.clone(),
            process,
            terminal,
            interactive: interactive || terminal,
        })?;
        let ResponseBody::Started { pid } = body else {
            return Err(VmExecError::Answer(format!("{body:?}"), "Exec"));
        };
        if let Some(flag) = &self.tty_started {
            flag.store(true, Ordering::Release);
        }
        Ok(pid)
    }

    /// Wait for the process and for its output to be delivered; its exit code.
    fn wait(self) -> Result<i32, VmExecError> {
        let mut waiter = connect(&self.dir, None)?;
        let body = waiter.call(RequestBody::Wait {
            id: self.exec_id.clone(),
        })?;
        let ResponseBody::Exited { exit_code, .. } = body else {
            return Err(VmExecError::Answer(format!("{body:?}"), "Wait"));
        };
        for output in self.outputs {
            let _ = output.join();
        }
        Ok(exit_code)
    }
}

fn connect(dir: &Path, timeout: Option<Duration>) -> Result<Agent, VmExecError> {
    let agent = Agent::connect(dir, Duration::from_secs(5))?;
    agent.set_timeout(timeout).map_err(VmExecError::Timeout)?;
    Ok(agent)
}

/// Block the forwarded signals in this thread (and the threads it starts after).
fn block_forwarded() -> Result<SigSet, VmExecError> {
    let mut set = SigSet::empty();
    for signal in FORWARDED {
        set.add(*signal);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(VmExecError::Signals)?;
    Ok(set)
}

/// A thread that sends every blocked signal that arrives to the guest process.
fn forward_signals(set: SigSet, dir: &Path, exec_id: &str) {
    let dir = dir.to_path_buf();
    let id = exec_id.to_owned();
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let exec_id = id;
            let mut agent: Option<Agent> = None;
            while let Ok(signal) = set.wait() {
                if agent.is_none() {
                    agent = connect(&dir, Some(Duration::from_secs(10))).ok();
                }
                let Some(conn) = agent.as_mut() else { continue };
                let sent = conn.call(RequestBody::Signal {
                    id: exec_id.clone(),
                    signal: signal as i32,
                });
                if let Err(ClientError::Protocol(_) | ClientError::Closed) = sent {
                    agent = None;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot forward signals to exec {exec_id}: {e}");
    }
}

/// A forked process that SIGKILLs the guest process when the relay dies without
/// saying it is done (it was killed: SIGKILL cannot be forwarded).
struct Guard {
    done: File,
}

impl Guard {
    /// Must be called while the process has a single thread.
    fn start(dir: &Path, exec_id: &str) -> Result<Guard, VmExecError> {
        let (watch, done) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(VmExecError::Guard)?;
        // SAFETY: the relay calls this first thing, while it has one thread, so the
        // child may run any code; it only uses what it inherits.
        match unsafe { nix::unistd::fork() }.map_err(VmExecError::Guard)? {
            nix::unistd::ForkResult::Child => {
                drop(done);
                guard_main(watch, dir, exec_id)
            }
            nix::unistd::ForkResult::Parent { .. } => Ok(Guard {
                done: File::from(done),
            }),
        }
    }

    /// The relay finishes normally: the guard leaves the process alone.
    fn disarm(self) {
        use std::io::Write;
        let mut done = self.done;
        let _ = done.write_all(b"d");
    }
}

fn guard_main(watch: OwnedFd, dir: &Path, exec_id: &str) -> ! {
    // Hold none of the caller's descriptors (a FIFO held open keeps a reader waiting).
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    let mut watch = File::from(watch);
    let mut byte = [0u8; 1];
    let told_done = loop {
        match watch.read(&mut byte) {
            Ok(n) => break n > 0,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break false,
        }
    };
    if !told_done {
        if let Ok(mut agent) = connect(dir, Some(Duration::from_secs(10))) {
            let _ = agent.call(RequestBody::Signal {
                id: exec_id.to_owned(),
                signal: Signal::SIGKILL as i32,
            });
        }
    }
    std::process::exit(0)
}
