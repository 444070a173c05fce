//! One container process and its standard streams: wiring them up (pipes or a pty), then pumping
//! bytes between them, the user's terminal and the log until the process exits.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::WaitStatus;

use super::log::{LogWriter, Stream};
use super::terminal;
use crate::runtime::ContainerProcess;

/// How long output may keep arriving after the process exited (from its orphans).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// What the session is connected to on berth's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wiring {
    /// The process gets a pty.
    pub tty: bool,
    /// Standard input stays open.
    pub interactive: bool,
    /// berth's own stdin/stdout/stderr are connected (foreground `run`, `exec`, `start -a`).
    pub attached: bool,
}

/// berth's ends of the process's streams.
pub struct SessionIo {
    wiring: Wiring,
    /// Where input for the process goes (pipe write end, or the pty master).
    input: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    /// The pty master, for window sizes.
    pty: Option<OwnedFd>,
    /// Where the pty master arrives from a process that has a terminal.
    console_socket: Option<OwnedFd>,
    /// A detached `-i` container's stdin: held open so reads block instead of seeing EOF.
    _held_open: Option<OwnedFd>,
}

/// Creates the pipes or pty for a process; returns berth's ends and the process's.
pub fn wire(wiring: Wiring) -> io::Result<(SessionIo, berth_agent::Stdio)> {
    if wiring.tty {
        // The process opens its pty inside the container and sends us the master.
        let (ours, theirs) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let io = SessionIo {
            wiring,
            input: None,
            stdout: None,
            stderr: None,
            pty: None,
            console_socket: Some(ours),
            _held_open: None,
        };
        return Ok((io, berth_agent::Stdio::ConsoleSocket { socket: theirs }));
    }
    let (stdout_r, stdout_w) = pipe_cloexec()?;
    let (stderr_r, stderr_w) = pipe_cloexec()?;
    let (stdin, input, held) = if wiring.interactive {
        let (r, w) = pipe_cloexec()?;
        if wiring.attached {
            (r, Some(w), None)
        } else {
            (r, None, Some(w))
        }
    } else {
        (OwnedFd::from(File::open("/dev/null")?), None, None)
    };
    let io = SessionIo {
        wiring,
        input,
        stdout: Some(stdout_r),
        stderr: Some(stderr_r),
        pty: None,
        console_socket: None,
        _held_open: held,
    };
    let stdio = berth_agent::Stdio::Fds {
        stdin,
        stdout: stdout_w,
        stderr: stderr_w,
    };
    Ok((io, stdio))
}

impl SessionIo {
    /// Once the process runs: for a terminal, takes the pty master it sent and wires it up.
    pub fn connect(&mut self) -> io::Result<()> {
        let Some(socket) = self.console_socket.take() else {
            return Ok(());
        };
        let master =
            berth_agent::stdio::receive_console(socket.as_fd()).map_err(io::Error::other)?;
        if self.wiring.attached {
            terminal::copy_window_size(io::stdin(), &master);
        }
        if self.wiring.interactive && self.wiring.attached {
            self.input = Some(master.try_clone()?);
        }
        self.stdout = Some(master.try_clone()?);
        self.pty = Some(master);
        Ok(())
    }
}

/// Signals berth handles while supervising (blocked, read through a signalfd).
fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    set
}

/// The exit code Docker reports for a wait status.
pub fn exit_code(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
        _ => 255,
    }
}

/// Pumps the streams until the process exits; returns its exit code. Signals sent to berth
/// are forwarded to the process; with a tty attached, resizes follow the terminal.
pub fn supervise(
    process: &mut dyn ContainerProcess,
    mut io: SessionIo,
    mut log: Option<LogWriter>,
) -> io::Result<i32> {
    io.connect()?;
    let signals = handled_signals();
    signals.thread_block().map_err(io::Error::from)?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(io::Error::from)?;
    let stdin = io::stdin();
    let _raw = if io.wiring.tty && io.wiring.attached && io.wiring.interactive {
        terminal::RawMode::enable(stdin.as_fd())
    } else {
        None
    };

    let mut pump = Pump {
        io,
        pending_input: Vec::new(),
        stdin_open: true,
    };
    pump.io.wiring.interactive &= pump.io.wiring.attached;
    if let Some(fd) = &pump.io.input {
        set_nonblocking(fd.as_fd())?;
    }

    let mut status = process.try_wait()?;
    let mut exited_at = status.map(|_| Instant::now());
    loop {
        let draining = exited_at.is_some();
        if draining && (!pump.has_outputs() || exited_at.is_some_and(|t| t.elapsed() > DRAIN_GRACE))
        {
            break;
        }
        let timeout = if draining { 100u16 } else { 1000 };
        let wants_stdin = !draining
            && pump.io.wiring.interactive
            && pump.stdin_open
            && pump.pending_input.is_empty()
            && pump.io.input.is_some();
        let wants_output = !draining && !pump.pending_input.is_empty();

        let mut fds: Vec<PollFd> = Vec::with_capacity(5);
        fds.push(PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN));
        let out_index = pump.io.stdout.as_ref().map(|fd| {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let err_index = pump.io.stderr.as_ref().map(|fd| {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let stdin_index = wants_stdin.then(|| {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let input_index = match (&pump.io.input, wants_output) {
            (Some(fd), true) => {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLOUT));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        match poll(&mut fds, PollTimeout::from(timeout)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready = |i: Option<usize>| {
            i.and_then(|i| fds.get(i))
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (sig_ready, out_ready, err_ready, in_ready, input_ready) = (
            ready(Some(0)),
            ready(out_index),
            ready(err_index),
            ready(stdin_index),
            ready(input_index),
        );
        drop(fds);

        if sig_ready {
            while let Ok(Some(info)) = signal_fd.read_signal() {
                let signal = Signal::try_from(info.ssi_signo as i32).ok();
                match signal {
                    Some(Signal::SIGCHLD) | None => {}
                    Some(Signal::SIGWINCH) => {
                        if let Some(pty) = &pump.io.pty {
                            terminal::copy_window_size(io::stdin(), pty);
                        }
                    }
                    Some(other) => {
                        let _ = process.signal(other);
                    }
                }
            }
        }
        if out_ready {
            pump.drain(Stream::Stdout, &mut log)?;
        }
        if err_ready {
            pump.drain(Stream::Stderr, &mut log)?;
        }
        if in_ready {
            pump.read_stdin(&stdin)?;
        }
        if input_ready {
            pump.flush_input()?;
        }
        if status.is_none() {
            status = process.try_wait()?;
            if status.is_some() {
                exited_at = Some(Instant::now());
                pump.io.input = None;
            }
        }
    }
    if let Some(log) = log.as_mut() {
        log.flush()?;
    }
    let _ = signals.thread_unblock();
    Ok(status.unwrap_or(255))
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
    Ok(())
}

struct Pump {
    io: SessionIo,
    pending_input: Vec<u8>,
    stdin_open: bool,
}

impl Pump {
    fn has_outputs(&self) -> bool {
        self.io.stdout.is_some() || self.io.stderr.is_some()
    }

    /// Reads what one output has; closes it at EOF (or EIO: a pty whose other side is gone).
    fn drain(&mut self, stream: Stream, log: &mut Option<LogWriter>) -> io::Result<()> {
        let slot = match stream {
            Stream::Stdout => &mut self.io.stdout,
            Stream::Stderr => &mut self.io.stderr,
        };
        let Some(fd) = slot.as_ref() else {
            return Ok(());
        };
        let mut buf = [0u8; 16 * 1024];
        let n = match nix::unistd::read(fd, &mut buf) {
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => return Ok(()),
            Err(Errno::EIO) => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            *slot = None;
            return Ok(());
        }
        let data = &buf[..n];
        if let Some(log) = log.as_mut() {
            log.write(stream, data)?;
        }
        if self.io.wiring.attached {
            let result = match stream {
                Stream::Stdout => io::stdout()
                    .lock()
                    .write_all(data)
                    .and_then(|()| io::stdout().flush()),
                Stream::Stderr => io::stderr().lock().write_all(data),
            };
            // The reader of berth's output went away: keep the container going, stop echoing.
            if let Err(e) = result {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn read_stdin(&mut self, stdin: &io::Stdin) -> io::Result<()> {
        let mut buf = [0u8; 16 * 1024];
        let n = match stdin.lock().read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        };
        if n == 0 {
            self.stdin_open = false;
            // EOF: a pipe's reader sees EOF too; a pty gets nothing more.
            if !self.io.wiring.tty {
                self.io.input = None;
            }
            return Ok(());
        }
        self.pending_input.extend_from_slice(&buf[..n]);
        self.flush_input()
    }

    fn flush_input(&mut self) -> io::Result<()> {
        let Some(fd) = &self.io.input else {
            self.pending_input.clear();
            return Ok(());
        };
        match nix::unistd::write(fd, &self.pending_input) {
            Ok(n) => {
                self.pending_input.drain(..n);
                Ok(())
            }
            Err(Errno::EAGAIN | Errno::EINTR) => Ok(()),
            Err(Errno::EPIPE) => {
                self.io.input = None;
                self.pending_input.clear();
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Raw fd of berth's stdin, for callers that test whether it is a terminal.
pub fn stdin_is_terminal() -> bool {
    nix::unistd::isatty(io::stdin().as_fd()).unwrap_or(false) && io::stdin().as_raw_fd() == 0
}

/// A pipe whose ends do not leak into programs berth executes.
fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)
}
